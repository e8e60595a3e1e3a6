//! Where durable files live: a real directory, or an in-memory simulated
//! disk that models what a crash keeps.
//!
//! The catalog ([`crate::catalog`]) is written once against [`Disk`]; the
//! production node hands it a directory, the madsim harness a [`MemDisk`]
//! (madsim's tokio does not simulate files, and a simulated disk must be able
//! to lose what was not fsynced when its node is killed).
//!
//! # Durability
//! - [`Dir`](Disk::dir): a write is durable once [`LogFile::sync`] returned
//!   (`fsync`); creating a file and [`Disk::write_atomic`] (write a temporary
//!   file, fsync it, rename it over the target, fsync the directory) also make
//!   the directory entry durable.
//! - [`MemDisk`]: appends are volatile until [`LogFile::sync`];
//!   [`MemDisk::crash`] keeps each file's synced prefix plus a chosen prefix
//!   of its unsynced bytes (a torn write). Truncation and `write_atomic` are
//!   durable when they return. Writes and syncs take simulated time
//!   ([`MemLatency`]), so a node can be killed in the middle of one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs blocking file IO off the async workers. Under madsim there is no
/// blocking pool (and the simulated disk does not block): run it inline.
#[cfg(not(madsim))]
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(madsim)]
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    f()
}

/// A place for durable files, addressed by plain file names.
#[derive(Clone, Debug)]
pub enum Disk {
    /// A real directory.
    Dir(PathBuf),
    /// A simulated disk.
    Mem(MemDisk),
}

impl Disk {
    /// A real directory (created when a file is first opened).
    pub fn dir(root: impl Into<PathBuf>) -> Disk {
        Disk::Dir(root.into())
    }

    /// How a file is named in messages: its path, or `mem:NAME`.
    pub fn describe(&self, name: &str) -> String {
        match self {
            Disk::Dir(root) => root.join(name).display().to_string(),
            Disk::Mem(_) => format!("mem:{name}"),
        }
    }

    /// The whole content of `name`, or `None` if it does not exist.
    ///
    /// # Errors
    /// Any IO error but "not found".
    pub async fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match self {
            Disk::Dir(root) => {
                let path = root.join(name);
                blocking(move || match File::open(&path) {
                    Ok(mut f) => {
                        let mut buf = Vec::new();
                        f.read_to_end(&mut buf)?;
                        Ok(Some(buf))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
            }
            Disk::Mem(m) => Ok(m.file(name)),
        }
    }

    /// Opens `name` for appending, creating it (durably: the directory is
    /// fsynced) if it does not exist.
    ///
    /// # Errors
    /// IO errors.
    pub async fn open_log(&self, name: &str) -> io::Result<LogFile> {
        match self {
            Disk::Dir(root) => {
                let root = root.clone();
                let path = root.join(name);
                let file = blocking(move || -> io::Result<File> {
                    std::fs::create_dir_all(&root)?;
                    let existed = path.exists();
                    let f = OpenOptions::new().create(true).append(true).open(&path)?;
                    if !existed {
                        f.sync_all()?;
                        sync_dir(&root)?;
                    }
                    Ok(f)
                })
                .await?;
                Ok(LogFile {
                    inner: LogInner::File(Arc::new(file)),
                })
            }
            Disk::Mem(m) => {
                m.touch(name);
                Ok(LogFile {
                    inner: LogInner::Mem {
                        disk: m.clone(),
                        name: name.to_owned(),
                    },
                })
            }
        }
    }

    /// Cuts `name` to `len` bytes, durably.
    ///
    /// # Errors
    /// IO errors.
    pub async fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        match self {
            Disk::Dir(root) => {
                let path = root.join(name);
                blocking(move || {
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(len)?;
                    f.sync_all()
                })
                .await
            }
            Disk::Mem(m) => {
                m.truncate(name, len);
                Ok(())
            }
        }
    }

    /// Replaces `name` with `bytes` atomically and durably: a crash leaves
    /// either the old content or the new one. (Write `name.tmp`, fsync it,
    /// rename it over `name`, fsync the directory.)
    ///
    /// # Errors
    /// IO errors; the old content is then intact.
    pub async fn write_atomic(&self, name: &str, bytes: Vec<u8>) -> io::Result<()> {
        match self {
            Disk::Dir(root) => {
                let root = root.clone();
                let path = root.join(name);
                let tmp = root.join(format!("{name}.tmp"));
                blocking(move || {
                    std::fs::create_dir_all(&root)?;
                    let mut f = File::create(&tmp)?;
                    f.write_all(&bytes)?;
                    f.sync_all()?;
                    drop(f);
                    std::fs::rename(&tmp, &path)?;
                    sync_dir(&root)
                })
                .await
            }
            Disk::Mem(m) => {
                m.replace(name, bytes).await;
                Ok(())
            }
        }
    }
}

fn sync_dir(dir: &std::path::Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file open for appending.
#[derive(Debug)]
pub struct LogFile {
    inner: LogInner,
}

#[derive(Debug)]
enum LogInner {
    File(Arc<File>),
    Mem { disk: MemDisk, name: String },
}

impl LogFile {
    /// Appends `bytes` (not durable until [`LogFile::sync`]).
    ///
    /// # Errors
    /// IO errors; part of `bytes` may then have been written.
    pub async fn append(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        match &self.inner {
            LogInner::File(f) => {
                let f = f.clone();
                blocking(move || (&*f).write_all(&bytes)).await
            }
            LogInner::Mem { disk, name } => {
                disk.append(name, &bytes).await;
                Ok(())
            }
        }
    }

    /// Makes every appended byte durable (`fsync`).
    ///
    /// # Errors
    /// IO errors; nothing appended since the last successful sync is then
    /// known to be durable.
    pub async fn sync(&mut self) -> io::Result<()> {
        match &self.inner {
            LogInner::File(f) => {
                let f = f.clone();
                blocking(move || f.sync_data()).await
            }
            LogInner::Mem { disk, name } => {
                disk.sync(name).await;
                Ok(())
            }
        }
    }
}

// ----- the simulated disk ----------------------------------------------------

/// How long simulated disk operations take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemLatency {
    /// An append.
    pub write: Duration,
    /// An fsync.
    pub sync: Duration,
}

#[derive(Debug, Default)]
struct MemFile {
    data: Vec<u8>,
    /// `data[..durable]` survives a crash.
    durable: usize,
}

#[derive(Debug, Default)]
struct MemFs {
    files: BTreeMap<String, MemFile>,
    latency: MemLatency,
}

/// An in-memory disk that survives its node: clone it into the node's
/// factory, and call [`MemDisk::crash`] when the node is killed.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    fs: Arc<Mutex<MemFs>>,
}

impl MemDisk {
    /// An empty disk whose operations take `latency`.
    pub fn new(latency: MemLatency) -> MemDisk {
        MemDisk {
            fs: Arc::new(Mutex::new(MemFs {
                files: BTreeMap::new(),
                latency,
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemFs) -> R) -> R {
        let mut g = match self.fs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    /// What a crash keeps: every file's synced prefix, plus the first
    /// `keep(name, unsynced)` of its `unsynced` bytes (clamped), which models
    /// a torn write. Returns how many unsynced bytes were lost in all.
    pub fn crash(&self, mut keep: impl FnMut(&str, usize) -> usize) -> usize {
        self.with(|fs| {
            let mut lost = 0;
            for (name, f) in &mut fs.files {
                let unsynced = f.data.len() - f.durable;
                let kept = keep(name, unsynced).min(unsynced);
                lost += unsynced - kept;
                f.data.truncate(f.durable + kept);
                f.durable = f.data.len();
            }
            lost
        })
    }

    /// The current content of `name` (synced or not).
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.with(|fs| fs.files.get(name).map(|f| f.data.clone()))
    }

    /// Sets `name` to `bytes`, durably (for tests that corrupt files).
    pub fn set_file(&self, name: &str, bytes: Vec<u8>) {
        self.with(|fs| {
            let durable = bytes.len();
            fs.files.insert(
                name.to_owned(),
                MemFile {
                    data: bytes,
                    durable,
                },
            );
        });
    }

    /// Bytes of `name` that a crash now could lose.
    pub fn unsynced(&self, name: &str) -> usize {
        self.with(|fs| fs.files.get(name).map_or(0, |f| f.data.len() - f.durable))
    }

    fn touch(&self, name: &str) {
        self.with(|fs| {
            fs.files.entry(name.to_owned()).or_default();
        });
    }

    fn latency(&self) -> MemLatency {
        self.with(|fs| fs.latency)
    }

    async fn append(&self, name: &str, bytes: &[u8]) {
        let d = self.latency().write;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        self.with(|fs| {
            fs.files
                .entry(name.to_owned())
                .or_default()
                .data
                .extend_from_slice(bytes)
        });
    }

    async fn sync(&self, name: &str) {
        // The bytes present when the fsync starts are durable when it ends.
        let upto = self.with(|fs| fs.files.get(name).map_or(0, |f| f.data.len()));
        let d = self.latency().sync;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        self.with(|fs| {
            if let Some(f) = fs.files.get_mut(name) {
                f.durable = f.durable.max(upto.min(f.data.len()));
            }
        });
    }

    fn truncate(&self, name: &str, len: u64) {
        self.with(|fs| {
            if let Some(f) = fs.files.get_mut(name) {
                f.data.truncate(usize::try_from(len).unwrap_or(usize::MAX));
                f.durable = f.data.len();
            }
        });
    }

    async fn replace(&self, name: &str, bytes: Vec<u8>) {
        let d = self.latency().sync;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        self.set_file(name, bytes);
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_crash_keeps_synced_bytes_and_a_chosen_prefix_of_the_rest() {
        block_on(async {
            let m = MemDisk::default();
            let disk = Disk::Mem(m.clone());
            let mut log = disk.open_log("log").await.unwrap();
            log.append(b"durable".to_vec()).await.unwrap();
            log.sync().await.unwrap();
            log.append(b"volatile".to_vec()).await.unwrap();
            assert_eq!(m.unsynced("log"), 8);
            let lost = m.crash(|_, n| n / 2);
            assert_eq!(lost, 4);
            assert_eq!(m.file("log").unwrap(), b"durablevola");
            assert_eq!(m.unsynced("log"), 0);
        });
    }

    #[test]
    fn a_real_directory_round_trips_appends_truncation_and_atomic_writes() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let disk = Disk::dir(dir.path().join("sub"));
            assert_eq!(disk.read("log").await.unwrap(), None);
            let mut log = disk.open_log("log").await.unwrap();
            log.append(b"hello ".to_vec()).await.unwrap();
            log.append(b"world".to_vec()).await.unwrap();
            log.sync().await.unwrap();
            assert_eq!(disk.read("log").await.unwrap().unwrap(), b"hello world");
            disk.truncate("log", 5).await.unwrap();
            assert_eq!(disk.read("log").await.unwrap().unwrap(), b"hello");
            disk.write_atomic("log", b"new".to_vec()).await.unwrap();
            assert_eq!(disk.read("log").await.unwrap().unwrap(), b"new");
            assert!(!dir.path().join("sub/log.tmp").exists());
        });
    }
}
