//! The file catalog on real temporary directories: round trips, and the
//! documented outcome of each kind of damage (see `catalog.rs`'s docs).
#![cfg(not(any(madsim, loom)))]

use std::path::Path;

use simcast_adapters::catalog::{
    CatalogError, Damage, FILE_HEADER_LEN, FileCatalog, LogRecord, RECORD_HEADER_LEN,
    encode_record, file_header,
};
use simcast_adapters::cluster::crash_test_op;
use simcast_adapters::disk::Disk;
use simcast_machines::broadcast::{BroadcastId, CatalogOp, CatalogState};

const NAME: &str = "catalog.log";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The state after applying `ops` in order: what a reopen must give.
fn expected(ops: &[CatalogOp]) -> CatalogState {
    let mut s = CatalogState::new();
    for op in ops {
        s.apply(op);
    }
    s
}

fn ops(n: u64) -> Vec<CatalogOp> {
    (1..=n)
        .flat_map(|k| {
            if k % 3 == 0 {
                vec![crash_test_op(k), CatalogOp::ReserveIds(k * 10)]
            } else if k % 5 == 0 {
                vec![CatalogOp::DeleteTask(BroadcastId(k - 1))]
            } else {
                vec![crash_test_op(k)]
            }
        })
        .collect()
}

/// Writes `ops` one append each into `dir`; returns the record offsets.
fn write_log(dir: &Path, ops: &[CatalogOp]) -> Vec<u64> {
    block_on(async {
        let (mut c, report) = FileCatalog::open(Disk::dir(dir), NAME).await.unwrap();
        assert!(report.created);
        let mut offsets = Vec::new();
        for op in ops {
            offsets.push(c.len());
            c.append(std::slice::from_ref(op)).await.unwrap();
        }
        offsets
    })
}

fn reopen(
    dir: &Path,
) -> Result<(CatalogState, simcast_adapters::catalog::OpenReport), CatalogError> {
    block_on(async {
        let (c, report) = FileCatalog::open(Disk::dir(dir), NAME).await?;
        Ok((c.state().clone(), report))
    })
}

fn file(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(NAME)).unwrap()
}

#[test]
fn every_durable_write_is_there_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ops = ops(20);
    write_log(dir.path(), &ops);
    let (state, report) = reopen(dir.path()).unwrap();
    assert_eq!(state, expected(&ops));
    assert_eq!(report.records, ops.len() as u64);
    assert_eq!(report.tail, None);
    assert!(!report.created);
}

#[test]
fn compaction_replaces_the_log_by_one_snapshot_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let ops = ops(30);
    block_on(async {
        let (mut c, _) = FileCatalog::open(Disk::dir(dir.path()), NAME)
            .await
            .unwrap();
        c.set_compact_after(7);
        for op in &ops {
            c.append(std::slice::from_ref(op)).await.unwrap();
        }
    });
    let (state, report) = reopen(dir.path()).unwrap();
    assert_eq!(state, expected(&ops));
    assert!(
        report.records < 8,
        "a snapshot and fewer than 7 ops: {report:?}"
    );
    assert!(!dir.path().join("catalog.log.tmp").exists());
}

#[test]
fn a_log_truncated_mid_record_is_a_torn_tail_keeping_every_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let ops = ops(11);
    let offsets = write_log(dir.path(), &ops);
    let bytes = file(dir.path());
    let last = *offsets.last().unwrap();
    // Cut the last record in the middle of its payload.
    let payload_len = bytes.len() as u64 - last - RECORD_HEADER_LEN;
    let present = payload_len / 2;
    assert!(present > 0);
    let cut = last + RECORD_HEADER_LEN + present;
    std::fs::write(dir.path().join(NAME), &bytes[..cut as usize]).unwrap();

    let (state, report) = reopen(dir.path()).unwrap();
    let kept = &ops[..ops.len() - 1];
    assert_eq!(
        state,
        expected(kept),
        "every record before the tear, nothing else"
    );
    let tail = report.tail.expect("the torn tail is reported");
    assert_eq!(tail.offset, last);
    assert_eq!(tail.len, cut - last);
    assert_eq!(
        tail.damage,
        Damage::PartialRecord {
            declared: payload_len,
            present
        }
    );
    // The cut bytes are saved, and the log is cut back to whole records.
    assert_eq!(
        std::fs::read(dir.path().join(format!("{NAME}.damaged-{last}"))).unwrap(),
        &bytes[last as usize..cut as usize]
    );
    assert_eq!(file(dir.path()).len() as u64, last);
    // A second open finds a clean log, and appends continue after it.
    block_on(async {
        let (mut c, report) = FileCatalog::open(Disk::dir(dir.path()), NAME)
            .await
            .unwrap();
        assert_eq!(report.tail, None);
        c.append(&[CatalogOp::ReserveIds(999)]).await.unwrap();
    });
    let (state, _) = reopen(dir.path()).unwrap();
    assert_eq!(state.id_limit, 999);
}

#[test]
fn a_log_truncated_mid_header_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ops = ops(4);
    let offsets = write_log(dir.path(), &ops);
    let last = *offsets.last().unwrap();
    let bytes = file(dir.path());
    std::fs::write(dir.path().join(NAME), &bytes[..last as usize + 5]).unwrap();
    let (state, report) = reopen(dir.path()).unwrap();
    assert_eq!(state, expected(&ops[..ops.len() - 1]));
    let tail = report.tail.unwrap();
    assert_eq!(tail.damage, Damage::PartialHeader { present: 5 });
}

#[test]
fn a_flipped_byte_in_the_last_record_is_a_corrupt_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ops = ops(6);
    let offsets = write_log(dir.path(), &ops);
    let last = *offsets.last().unwrap();
    let mut bytes = file(dir.path());
    let at = bytes.len() - 2;
    bytes[at] ^= 0x40;
    std::fs::write(dir.path().join(NAME), &bytes).unwrap();
    let (state, report) = reopen(dir.path()).unwrap();
    assert_eq!(state, expected(&ops[..ops.len() - 1]));
    let tail = report.tail.unwrap();
    assert_eq!((tail.offset, tail.damage), (last, Damage::PayloadChecksum));
}

#[test]
fn a_flipped_byte_in_a_middle_record_is_an_error_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let ops = ops(8);
    let offsets = write_log(dir.path(), &ops);
    for (target, in_header) in [(offsets[3], false), (offsets[4], true)] {
        let original = file(dir.path());
        let mut bytes = original.clone();
        // A payload byte, or the length field of the header.
        let at = if in_header {
            target as usize
        } else {
            (target + RECORD_HEADER_LEN + 1) as usize
        };
        bytes[at] ^= 0x01;
        std::fs::write(dir.path().join(NAME), &bytes).unwrap();
        match reopen(dir.path()) {
            Err(CatalogError::Corrupt {
                path,
                offset,
                damage,
                next_valid,
            }) => {
                assert_eq!(path, dir.path().join(NAME).display().to_string());
                assert_eq!(offset, target);
                assert_eq!(
                    damage,
                    if in_header {
                        Damage::HeaderChecksum
                    } else {
                        Damage::PayloadChecksum
                    }
                );
                assert!(next_valid > offset);
                let message = CatalogError::Corrupt {
                    path: path.clone(),
                    offset,
                    damage,
                    next_valid,
                }
                .to_string();
                assert!(
                    message.contains(&path) && message.contains(&format!("offset {target}")),
                    "{message}"
                );
            }
            other => panic!("expected a corrupt-record error, got {other:?}"),
        }
        assert_eq!(file(dir.path()), bytes, "the file is left untouched");
        std::fs::write(dir.path().join(NAME), &original).unwrap();
    }
}

#[test]
fn a_record_with_valid_checksums_that_does_not_decode_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = file_header().to_vec();
    bytes.extend_from_slice(&encode_record(&LogRecord::Op(CatalogOp::ReserveIds(5))));
    // A well-framed record whose payload is not a LogRecord.
    let payload = [0xFFu8; 6];
    let mut rec = (payload.len() as u32).to_le_bytes().to_vec();
    rec.extend_from_slice(&simcast_adapters::crc32::crc32(&payload).to_le_bytes());
    let hcrc = simcast_adapters::crc32::crc32(&rec);
    rec.extend_from_slice(&hcrc.to_le_bytes());
    rec.extend_from_slice(&payload);
    let offset = bytes.len() as u64;
    bytes.extend_from_slice(&rec);
    std::fs::write(dir.path().join(NAME), &bytes).unwrap();
    match reopen(dir.path()) {
        Err(CatalogError::Undecodable { offset: o, .. }) => assert_eq!(o, offset),
        other => panic!("expected undecodable, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_a_catalog_or_of_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(NAME), b"hello, world").unwrap();
    assert!(matches!(
        reopen(dir.path()),
        Err(CatalogError::NotACatalog { .. })
    ));
    let mut header = file_header();
    header[7] = 9;
    std::fs::write(dir.path().join(NAME), header).unwrap();
    assert!(matches!(
        reopen(dir.path()),
        Err(CatalogError::UnsupportedVersion { version: 9, .. })
    ));
}

#[test]
fn a_file_torn_while_being_created_starts_over_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(NAME), &file_header()[..3]).unwrap();
    let (state, report) = reopen(dir.path()).unwrap();
    assert_eq!(state, CatalogState::new());
    assert_eq!(
        report.tail.unwrap().damage,
        Damage::PartialHeader { present: 3 }
    );
    assert_eq!(file(dir.path()).len() as u64, FILE_HEADER_LEN);
}
