//! The broadcaster's durable records on disk: an append-only log of
//! checksummed, length-prefixed records, compacted by an atomic snapshot.
//!
//! # Format
//! ```text
//! file   := header record*
//! header := "SCATLOG" version:u8                      (8 bytes, version 1)
//! record := len:u32le payload_crc:u32le header_crc:u32le payload
//!           header_crc = crc32(len ++ payload_crc), payload_crc = crc32(payload)
//! payload:= bincode 2 (serde, standard config) of LogRecord
//! ```
//! A [`LogRecord`] is one [`CatalogOp`] (applied with
//! [`CatalogState::apply`], the same semantics as the simulator's catalog) or
//! a whole [`CatalogState`] (a snapshot: the state from there on).
//!
//! # Writes
//! [`FileCatalog::append`] writes a batch of records with one `write` and
//! one `fsync` (group commit); it returns only once they are durable. If
//! either fails, the file is cut back to its last durable length before
//! anything else is written, so a failed write never leaves garbage in front
//! of later records. Every `compact_after` records the log is replaced by a
//! single snapshot record, atomically ([`Disk::write_atomic`]: temporary
//! file, fsync, rename, fsync the directory); if that fails part-way, the
//! writer refuses further appends until the catalog is reopened (the file in
//! place is complete either way, but which one it is is unknown).
//!
//! # Opening: the documented outcomes
//! Opening reads the log from the start and applies every valid record. At
//! the first record that is not valid, at offset `o`:
//! - **Torn or corrupt tail** — no valid record follows `o` (a crash cut the
//!   last write short, or its bytes are garbage): the open *succeeds* with
//!   every record before `o`, and reports [`TailDamage`] (offset, length,
//!   what was wrong). The damaged bytes are first saved to
//!   `NAME.damaged-<o>`, then the log is cut to `o` (durably), so nothing is
//!   silently dropped and new records never follow garbage.
//! - **Corrupt record in the middle** — a valid record follows `o`: the open
//!   *fails* with [`CatalogError::Corrupt`] naming the file, the offset `o`,
//!   what was wrong and where the next valid record starts. The file is left
//!   untouched: silently skipping a record, or dropping the valid ones after
//!   it, could resurrect or lose a task.
//! - A record whose checksum is valid but which does not decode is
//!   [`CatalogError::Undecodable`] (with file and offset), wherever it is:
//!   it was written whole, by a different format.
//! - A file that does not start with the magic is
//!   [`CatalogError::NotACatalog`]; an unknown version is
//!   [`CatalogError::UnsupportedVersion`]. A file shorter than the header
//!   that is a prefix of it (a crash while creating it) is a torn tail at
//!   offset 0.
//!
//! Nothing is ever invented: every record applied passed both checksums.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};
use simcast_machines::broadcast::{CatalogOp, CatalogState, IoError, WriteId};
use tokio::sync::mpsc;

use crate::crc32::crc32;
use crate::disk::{Disk, LogFile};

/// The first 7 bytes of every catalog file.
pub const MAGIC: &[u8; 7] = b"SCATLOG";
/// The format version this code reads and writes.
pub const VERSION: u8 = 1;
/// Length of the file header.
pub const FILE_HEADER_LEN: u64 = 8;
/// Length of a record header.
pub const RECORD_HEADER_LEN: u64 = 12;
/// The largest payload a record may declare (a larger length is damage).
pub const MAX_RECORD: u64 = 64 << 20;
/// Default number of records after which the log is compacted.
pub const COMPACT_AFTER: u64 = 4096;

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRecord {
    /// A write, applied with [`CatalogState::apply`].
    Op(CatalogOp),
    /// The whole state: what came before no longer matters.
    Snapshot(CatalogState),
}

/// What is wrong with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Fewer than 12 bytes left: the header was cut short.
    PartialHeader {
        /// Bytes present.
        present: u64,
    },
    /// The header's own checksum does not match.
    HeaderChecksum,
    /// The header declares a payload larger than [`MAX_RECORD`].
    Oversized {
        /// Declared length.
        len: u64,
    },
    /// The payload runs past the end of the file: the write was cut short.
    PartialRecord {
        /// Declared payload length.
        declared: u64,
        /// Payload bytes present.
        present: u64,
    },
    /// The payload's checksum does not match.
    PayloadChecksum,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::PartialHeader { present } => {
                write!(f, "record header cut short ({present} of 12 bytes)")
            }
            Damage::HeaderChecksum => f.write_str("record header checksum mismatch"),
            Damage::Oversized { len } => {
                write!(f, "record declares {len} bytes, more than {MAX_RECORD}")
            }
            Damage::PartialRecord { declared, present } => write!(
                f,
                "record cut short ({present} of {declared} payload bytes)"
            ),
            Damage::PayloadChecksum => f.write_str("record payload checksum mismatch"),
        }
    }
}

/// Why a catalog cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the catalog magic.
    #[error("{path}: not a simcast catalog (bad magic)")]
    NotACatalog {
        /// The file.
        path: String,
    },
    /// The file's format version is not [`VERSION`].
    #[error("{path}: unsupported catalog version {version} (this build reads {VERSION})")]
    UnsupportedVersion {
        /// The file.
        path: String,
        /// The version found.
        version: u8,
    },
    /// A damaged record with valid records after it: not a torn tail.
    #[error(
        "{path}: corrupt record at offset {offset}: {damage}; a valid record follows at offset {next_valid}, so this is not a torn tail (file left untouched)"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong with it.
        damage: Damage,
        /// Where the next valid record starts.
        next_valid: u64,
    },
    /// A record with valid checksums that does not decode.
    #[error("{path}: record at offset {offset} has valid checksums but does not decode: {message}")]
    Undecodable {
        /// The file.
        path: String,
        /// Where the record starts.
        offset: u64,
        /// The decoder's complaint.
        message: String,
    },
}

/// A damaged tail found (and cut off) when opening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailDamage {
    /// Where the damaged bytes started (the log now ends here).
    pub offset: u64,
    /// How many bytes were cut off.
    pub len: u64,
    /// What was wrong with the first of them.
    pub damage: Damage,
    /// The file the cut bytes were saved to.
    pub saved_as: String,
}

impl fmt::Display for TailDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "damaged tail at offset {} ({} bytes: {}), saved to {} and cut off",
            self.offset, self.len, self.damage, self.saved_as
        )
    }
}

/// What opening found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The catalog file.
    pub path: String,
    /// The file did not exist and was created.
    pub created: bool,
    /// Valid records applied.
    pub records: u64,
    /// A damaged tail, if one was cut off.
    pub tail: Option<TailDamage>,
}

/// Deliberately broken variants, for the madsim mutation check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CatalogFlaw {
    /// The writer acknowledges a batch once it is written and fsyncs later,
    /// in the background (at most every [`LAZY_SYNC`]): a crash in between
    /// loses writes the broadcaster was told are durable.
    AckBeforeFsync,
}

/// Encodes one record, header included.
pub fn encode_record(record: &LogRecord) -> Vec<u8> {
    let payload = bincode::serde::encode_to_vec(record, bincode::config::standard())
        .expect("catalog records always encode");
    let len = u32::try_from(payload.len()).expect("a record fits in u32");
    let mut out = Vec::with_capacity(payload.len() + RECORD_HEADER_LEN as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    let header_crc = crc32(&out[..8]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The file header.
pub fn file_header() -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..7].copy_from_slice(MAGIC);
    h[7] = VERSION;
    h
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks the record at `o`: its payload range, or what is wrong.
fn check_record(bytes: &[u8], o: usize) -> Result<(usize, usize), Damage> {
    let rest = bytes.len() - o;
    if rest < RECORD_HEADER_LEN as usize {
        return Err(Damage::PartialHeader {
            present: rest as u64,
        });
    }
    let len = u32_at(bytes, o);
    let payload_crc = u32_at(bytes, o + 4);
    if crc32(&bytes[o..o + 8]) != u32_at(bytes, o + 8) {
        return Err(Damage::HeaderChecksum);
    }
    if u64::from(len) > MAX_RECORD {
        return Err(Damage::Oversized {
            len: u64::from(len),
        });
    }
    let start = o + RECORD_HEADER_LEN as usize;
    let end = start + len as usize;
    if end > bytes.len() {
        return Err(Damage::PartialRecord {
            declared: u64::from(len),
            present: (bytes.len() - start) as u64,
        });
    }
    if crc32(&bytes[start..end]) != payload_crc {
        return Err(Damage::PayloadChecksum);
    }
    Ok((start, end))
}

/// The first offset after `o` where a whole valid record starts.
fn next_valid_record(bytes: &[u8], o: usize) -> Option<usize> {
    (o + 1..bytes.len()).find(|&p| check_record(bytes, p).is_ok())
}

/// The result of reading a log's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The state after every valid record.
    pub state: CatalogState,
    /// Valid records.
    pub records: u64,
    /// Length of the valid prefix.
    pub valid_len: u64,
    /// A damaged tail: its offset and what is wrong (no valid record after).
    pub tail: Option<(u64, Damage)>,
}

/// What a scan refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// Bad magic.
    NotACatalog,
    /// Unknown version.
    UnsupportedVersion(u8),
    /// Damage with valid records after it.
    Corrupt {
        /// Offset of the damaged record.
        offset: u64,
        /// What is wrong.
        damage: Damage,
        /// Offset of the next valid record.
        next_valid: u64,
    },
    /// Valid checksums, undecodable payload.
    Undecodable {
        /// Offset of the record.
        offset: u64,
        /// The decoder's complaint.
        message: String,
    },
}

/// Reads a whole log (pure: no IO). See the module docs for the outcomes.
///
/// # Errors
/// [`ScanError`].
pub fn scan(bytes: &[u8]) -> Result<Scan, ScanError> {
    let header = file_header();
    if bytes.len() < header.len() {
        if header.starts_with(bytes) {
            return Ok(Scan {
                state: CatalogState::new(),
                records: 0,
                valid_len: 0,
                tail: Some((
                    0,
                    Damage::PartialHeader {
                        present: bytes.len() as u64,
                    },
                )),
            });
        }
        return Err(ScanError::NotACatalog);
    }
    if &bytes[..7] != MAGIC {
        return Err(ScanError::NotACatalog);
    }
    if bytes[7] != VERSION {
        return Err(ScanError::UnsupportedVersion(bytes[7]));
    }
    let mut state = CatalogState::new();
    let mut records = 0;
    let mut o = header.len();
    while o < bytes.len() {
        match check_record(bytes, o) {
            Ok((start, end)) => {
                let decoded: Result<(LogRecord, usize), _> = bincode::serde::decode_from_slice(
                    &bytes[start..end],
                    bincode::config::standard(),
                );
                match decoded {
                    Ok((record, used)) if used == end - start => match record {
                        LogRecord::Op(op) => state.apply(&op),
                        LogRecord::Snapshot(s) => state = s,
                    },
                    Ok(_) => {
                        return Err(ScanError::Undecodable {
                            offset: o as u64,
                            message: "trailing bytes after the record".to_owned(),
                        });
                    }
                    Err(e) => {
                        return Err(ScanError::Undecodable {
                            offset: o as u64,
                            message: e.to_string(),
                        });
                    }
                }
                records += 1;
                o = end;
            }
            Err(damage) => {
                if let Some(next) = next_valid_record(bytes, o) {
                    return Err(ScanError::Corrupt {
                        offset: o as u64,
                        damage,
                        next_valid: next as u64,
                    });
                }
                return Ok(Scan {
                    state,
                    records,
                    valid_len: o as u64,
                    tail: Some((o as u64, damage)),
                });
            }
        }
    }
    Ok(Scan {
        state,
        records,
        valid_len: o as u64,
        tail: None,
    })
}

/// A catalog file open for writing.
#[derive(Debug)]
pub struct FileCatalog {
    disk: Disk,
    name: String,
    log: LogFile,
    /// The state as of the last durable append.
    state: CatalogState,
    /// Length of the durable, valid log.
    len: u64,
    records_since_snapshot: u64,
    compact_after: u64,
    /// A failed write may have left bytes after `len`: cut them first.
    needs_repair: bool,
    /// A compaction failed part-way: which file is in place is unknown, so
    /// nothing more is written until the catalog is opened again.
    poisoned: bool,
}

impl FileCatalog {
    /// Opens (or creates) the catalog `name` on `disk`, with the outcomes
    /// the module docs list.
    ///
    /// # Errors
    /// [`CatalogError`].
    pub async fn open(disk: Disk, name: &str) -> Result<(FileCatalog, OpenReport), CatalogError> {
        let path = disk.describe(name);
        let io = |source| CatalogError::Io {
            path: path.clone(),
            source,
        };
        let (bytes, created) = match disk.read(name).await.map_err(io)? {
            Some(b) => (b, false),
            None => (Vec::new(), true),
        };
        let scan = scan(&bytes).map_err(|e| match e {
            ScanError::NotACatalog => CatalogError::NotACatalog { path: path.clone() },
            ScanError::UnsupportedVersion(version) => CatalogError::UnsupportedVersion {
                path: path.clone(),
                version,
            },
            ScanError::Corrupt {
                offset,
                damage,
                next_valid,
            } => CatalogError::Corrupt {
                path: path.clone(),
                offset,
                damage,
                next_valid,
            },
            ScanError::Undecodable { offset, message } => CatalogError::Undecodable {
                path: path.clone(),
                offset,
                message,
            },
        })?;
        let mut tail = None;
        let mut len = scan.valid_len;
        if created || len < FILE_HEADER_LEN {
            // New, or torn while being created: write the header atomically.
            if let Some((offset, damage)) = scan.tail {
                let saved_as = format!("{name}.damaged-{offset}");
                disk.write_atomic(&saved_as, bytes.clone())
                    .await
                    .map_err(io)?;
                tail = Some(TailDamage {
                    offset,
                    len: bytes.len() as u64,
                    damage,
                    saved_as: disk.describe(&saved_as),
                });
            }
            disk.write_atomic(name, file_header().to_vec())
                .await
                .map_err(io)?;
            len = FILE_HEADER_LEN;
        } else if let Some((offset, damage)) = scan.tail {
            let saved_as = format!("{name}.damaged-{offset}");
            disk.write_atomic(&saved_as, bytes[offset as usize..].to_vec())
                .await
                .map_err(io)?;
            disk.truncate(name, offset).await.map_err(io)?;
            tail = Some(TailDamage {
                offset,
                len: bytes.len() as u64 - offset,
                damage,
                saved_as: disk.describe(&saved_as),
            });
        }
        if let Some(t) = &tail {
            tracing::warn!(catalog = %path, "{t}");
        }
        let log = disk.open_log(name).await.map_err(io)?;
        let report = OpenReport {
            path: path.clone(),
            created,
            records: scan.records,
            tail,
        };
        Ok((
            FileCatalog {
                disk,
                name: name.to_owned(),
                log,
                state: scan.state,
                len,
                records_since_snapshot: scan.records,
                compact_after: COMPACT_AFTER,
                needs_repair: false,
                poisoned: false,
            },
            report,
        ))
    }

    /// Compacts after this many records instead of [`COMPACT_AFTER`].
    pub fn set_compact_after(&mut self, records: u64) {
        self.compact_after = records.max(1);
    }

    /// The state as of the last durable append.
    pub fn state(&self) -> &CatalogState {
        &self.state
    }

    /// The catalog file, for messages.
    pub fn path(&self) -> String {
        self.disk.describe(&self.name)
    }

    /// Length of the durable log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len <= FILE_HEADER_LEN
    }

    fn io(&self, source: io::Error) -> CatalogError {
        CatalogError::Io {
            path: self.path(),
            source,
        }
    }

    async fn repair(&mut self) -> Result<(), CatalogError> {
        if self.poisoned {
            return Err(self.io(io::Error::other(
                "a compaction failed part-way: reopen the catalog",
            )));
        }
        if self.needs_repair {
            self.disk
                .truncate(&self.name, self.len)
                .await
                .map_err(|e| self.io(e))?;
            self.log = self
                .disk
                .open_log(&self.name)
                .await
                .map_err(|e| self.io(e))?;
            self.needs_repair = false;
        }
        Ok(())
    }

    /// Appends `ops` with one write and one fsync; returns once they are
    /// durable, then applies them to [`FileCatalog::state`]. Compacts when due.
    ///
    /// # Errors
    /// [`CatalogError::Io`]: none of `ops` is then known to be durable, and
    /// the bytes written are cut off before the next append.
    pub async fn append(&mut self, ops: &[CatalogOp]) -> Result<(), CatalogError> {
        let written = self.write(ops).await?;
        self.sync(ops, written).await
    }

    /// The first half of [`FileCatalog::append`]: the write, without the
    /// fsync. Returns the bytes written, for [`FileCatalog::sync`].
    async fn write(&mut self, ops: &[CatalogOp]) -> Result<u64, CatalogError> {
        self.repair().await?;
        let mut buf = Vec::new();
        for op in ops {
            buf.extend_from_slice(&encode_record(&LogRecord::Op(op.clone())));
        }
        let n = buf.len() as u64;
        if let Err(e) = self.log.append(buf).await {
            self.needs_repair = true;
            return Err(self.io(e));
        }
        Ok(n)
    }

    async fn sync(&mut self, ops: &[CatalogOp], written: u64) -> Result<(), CatalogError> {
        if let Err(e) = self.log.sync().await {
            self.needs_repair = true;
            return Err(self.io(e));
        }
        self.len += written;
        for op in ops {
            self.state.apply(op);
        }
        self.records_since_snapshot += ops.len() as u64;
        if self.records_since_snapshot >= self.compact_after {
            // The batch is durable whatever happens to the compaction.
            if let Err(e) = self.compact().await {
                tracing::error!("catalog compaction failed: {e}");
            }
        }
        Ok(())
    }

    /// Replaces the log by one snapshot of the state, atomically.
    ///
    /// # Errors
    /// [`CatalogError::Io`]. The file in place is then the old log or the
    /// snapshot, both complete; since this handle cannot tell which, it
    /// refuses further appends ([`FileCatalog::append`] fails) until the
    /// catalog is opened again.
    pub async fn compact(&mut self) -> Result<(), CatalogError> {
        let r = self.replace_by_snapshot().await;
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    async fn replace_by_snapshot(&mut self) -> Result<(), CatalogError> {
        let mut bytes = file_header().to_vec();
        bytes.extend_from_slice(&encode_record(&LogRecord::Snapshot(self.state.clone())));
        let len = bytes.len() as u64;
        self.disk
            .write_atomic(&self.name, bytes)
            .await
            .map_err(|e| self.io(e))?;
        // The old handle points at the replaced file.
        self.log = self
            .disk
            .open_log(&self.name)
            .await
            .map_err(|e| self.io(e))?;
        self.len = len;
        self.records_since_snapshot = 0;
        Ok(())
    }
}

/// A request to the writer task.
#[derive(Debug)]
struct WriteRequest {
    write: WriteId,
    op: CatalogOp,
}

/// The catalog's writer: a task that owns the [`FileCatalog`] and applies
/// writes in batches (group commit), reporting each write's completion.
#[derive(Clone, Debug)]
pub struct CatalogWriter {
    tx: mpsc::UnboundedSender<WriteRequest>,
}

/// How long the flawed writer ([`CatalogFlaw::AckBeforeFsync`]) lets
/// acknowledged writes wait for their fsync.
pub const LAZY_SYNC: std::time::Duration = std::time::Duration::from_millis(100);

/// Most writes applied with one fsync.
pub const MAX_BATCH: usize = 256;

impl CatalogWriter {
    /// Starts the writer task over `catalog`; `done` is called with each
    /// write's result, in write order, once it is durable (or failed). The
    /// task ends when every [`CatalogWriter`] is dropped, after finishing the
    /// batch in hand.
    pub fn spawn(
        mut catalog: FileCatalog,
        flaw: Option<CatalogFlaw>,
        mut done: impl FnMut(WriteId, Result<(), IoError>) + Send + 'static,
    ) -> CatalogWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<WriteRequest>();
        tokio::spawn(async move {
            // Only the flawed writer defers fsyncs: what it acknowledged and
            // has not synced yet.
            let mut unsynced: (Vec<CatalogOp>, u64) = (Vec::new(), 0);
            let mut last_sync = tokio::time::Instant::now();
            while let Some(first) = rx.recv().await {
                let mut batch: Vec<WriteRequest> = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let ops: Vec<CatalogOp> = batch.iter().map(|r| r.op.clone()).collect();
                let result = match flaw {
                    None => catalog.append(&ops).await,
                    Some(CatalogFlaw::AckBeforeFsync) => match catalog.write(&ops).await {
                        Ok(n) => {
                            // The bug: acknowledged once written, fsynced
                            // later, in the background.
                            for r in &batch {
                                done(r.write, Ok(()));
                            }
                            unsynced.0.extend(ops);
                            unsynced.1 += n;
                            if last_sync.elapsed() >= LAZY_SYNC {
                                let (ops, n) = std::mem::take(&mut unsynced);
                                if let Err(e) = catalog.sync(&ops, n).await {
                                    tracing::warn!("{e}");
                                }
                                last_sync = tokio::time::Instant::now();
                            }
                            continue;
                        }
                        Err(e) => Err(e),
                    },
                };
                let result = result.map_err(|e| {
                    tracing::warn!("catalog write failed: {e}");
                    IoError::Failed
                });
                for r in &batch {
                    done(r.write, result);
                }
            }
        });
        CatalogWriter { tx }
    }

    /// Queues a write. Its completion comes through the `done` callback.
    ///
    /// # Errors
    /// The writer task is gone (its runtime or node stopped).
    pub fn submit(&self, write: WriteId, op: CatalogOp) -> Result<(), IoError> {
        self.tx
            .send(WriteRequest { write, op })
            .map_err(|_| IoError::Failed)
    }
}
