//! The audit journal: the commit point of every audit record on SQLite. (On
//! PostgreSQL the database is, see [`AuditChain::in_store`]: a journal file
//! cannot serialize processes on several hosts.)
//!
//! A record is appended to `.arbiter/audit.journal` (one JSON line, one
//! `write(2)` under an exclusive `flock`) before the reply goes out, and a
//! background task indexes it into the store. The append is what makes the
//! record durable against a killed process (the bytes are in the kernel's page
//! cache, exactly the guarantee SQLite gives in WAL mode with
//! `synchronous=NORMAL`); only power loss can take the newest records. Measured
//! here, the append costs a few microseconds where a SQLite commit through sqlx
//! cost about 130 µs per call.
//!
//! The journal is also the chain's head: under the lock, an appender that sees
//! the file changed since its own last append (another process, e.g. `arbiter
//! call` beside a running server) reads the head back from the last line, so
//! several processes extend one chain. A torn last line (a process killed
//! mid-write, whose call never got a reply) is cut before the next append.
//! When the journal grows past a limit, the lines already in the store are cut
//! from its front (see [`cut_indexed`]); the newer ones, and at least the head,
//! stay.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::FlockOperation;
use tokio::sync::{Mutex, Notify};

use super::audit::{AuditEntry, AuditError, AuditRecord, ChainHead, GENESIS_HASH, IndexLine};
use super::{LazyStore, Store, StoreError};

/// Journal size past which its indexed lines are cut.
const ROTATE_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes read at a time when looking for where the lines to keep start.
const SCAN_CHUNK: u64 = 64 * 1024;
/// Longest journal line read back when looking for the head (records are capped well below).
const MAX_LINE_BYTES: u64 = 64 * 1024;
/// The indexer waits for appends to pause this long before it indexes
/// them: calls arriving back to back get the cores, and the index catches
/// up in the pause after them.
const INDEX_QUIET: Duration = Duration::from_millis(20);
/// The longest the indexer waits for that pause once records are waiting:
/// the index lags a server that never pauses by about this much.
const INDEX_DELAY: Duration = Duration::from_secs(1);
/// Records waiting that start the indexer without a pause: bounds how far
/// the index lags and how much it then has to catch up.
const INDEX_EARLY: i64 = 16 * 1024;
/// Journal bytes read and indexed at a time (about 1,000 records), with a
/// yield to other tasks between steps: 2,000 records at once held a core for
/// ~10 ms, the p99 of a loaded HTTP server. Steps of 1,024 records rather
/// than 128: SQLite's CPU per record fell from 3.4–3.7 µs to 3.0–3.3 µs
/// (fewer partly filled pages rewritten per record).
const INDEX_STEP_BYTES: usize = 512 * 1024;
/// Records indexed per INSERT.
const INDEX_BATCH: usize = 256;

pub type StoreOpener = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Arc<dyn Store>, StoreError>> + Send>>
        + Send
        + Sync,
>;

/// Where a record landed.
#[derive(Debug, Clone)]
pub struct AuditReceipt {
    pub seq: i64,
    pub hash: String,
}

/// Handle to a tenant's audit chain. Cheap to clone.
#[derive(Clone)]
pub struct AuditChain {
    backend: Backend,
}

/// Where records are committed.
#[derive(Clone)]
enum Backend {
    /// The workspace's journal file, indexed into the store behind it (SQLite).
    Journal(Arc<Inner>),
    /// The store itself (PostgreSQL), shared by processes on several hosts.
    Store(Arc<InStore>),
}

impl std::fmt::Debug for AuditChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Journal(inner) => f
                .debug_struct("AuditChain")
                .field("journal", &inner.path)
                .finish(),
            Backend::Store(inner) => f
                .debug_struct("AuditChain")
                .field("store", &inner.tenant)
                .finish(),
        }
    }
}

/// A chain committed by the store: no journal, no indexer.
struct InStore {
    tenant: String,
    store: Arc<LazyStore>,
    /// A journal left by an earlier version, indexed before the first append.
    legacy_journal: PathBuf,
    caught_up: tokio::sync::OnceCell<()>,
}

struct Inner {
    tenant: String,
    path: PathBuf,
    /// The journal, opened for appending; shared by every append of this process.
    file: File,
    state: Mutex<JournalState>,
    store: Arc<LazyStore>,
    /// Highest seq this process's indexer has seen committed in the store.
    indexed_through: AtomicI64,
    wake_indexer: Notify,
    /// Appends made by this process: the indexer waits for it to stop moving.
    appends: AtomicU64,
    /// Told when [`INDEX_EARLY`] records wait to be indexed.
    index_early: Notify,
    /// Size past which the journal is cut ([`ROTATE_BYTES`] but in tests).
    rotate_bytes: u64,
}

struct JournalState {
    /// Where this process last left the end of the file; a different size
    /// means someone else appended (or cut) since.
    known_end: u64,
    head: Option<ChainHead>,
    /// The line that ends the file at `known_end` (empty for an empty file):
    /// a file cut and grown again by another process can come back to the
    /// same size with other lines.
    last_line: Vec<u8>,
    /// `indexed_through` when a cut last found too much not yet indexed: no
    /// new try (a scan of up to half the limit) until the indexer moves on.
    uncut_at: Option<i64>,
}

impl AuditChain {
    /// Open (creating) the journal at `path` and start indexing it into the
    /// store that `opener` opens. Opening the store happens in the background,
    /// so a server can answer `initialize` at once.
    pub fn open(tenant: String, path: &Path, store: Arc<LazyStore>) -> std::io::Result<Self> {
        Self::open_with_limit(tenant, path, store, ROTATE_BYTES)
    }

    /// [`AuditChain::open`], cutting the journal past `rotate_bytes`.
    fn open_with_limit(
        tenant: String,
        path: &Path,
        store: Arc<LazyStore>,
        rotate_bytes: u64,
    ) -> std::io::Result<Self> {
        let file = open_journal(path)?;
        let inner = Arc::new(Inner {
            tenant,
            path: path.to_path_buf(),
            file,
            state: Mutex::new(JournalState {
                known_end: u64::MAX,
                head: None,
                last_line: Vec::new(),
                uncut_at: None,
            }),
            store,
            indexed_through: AtomicI64::new(0),
            wake_indexer: Notify::new(),
            appends: AtomicU64::new(0),
            index_early: Notify::new(),
            rotate_bytes,
        });
        tokio::spawn(index_continuously(Arc::clone(&inner)));
        Ok(Self {
            backend: Backend::Journal(inner),
        })
    }

    /// A chain whose commit point is the store (PostgreSQL): each append is
    /// one transaction that locks the tenant's head row, so processes on
    /// different hosts, with different workspaces, extend one chain. A
    /// journal at `legacy_journal` (left by a version that committed there)
    /// is indexed before the first append, so its records stay in the chain.
    pub fn in_store(tenant: String, legacy_journal: &Path, store: Arc<LazyStore>) -> Self {
        Self {
            backend: Backend::Store(Arc::new(InStore {
                tenant,
                store,
                legacy_journal: legacy_journal.to_path_buf(),
                caught_up: tokio::sync::OnceCell::new(),
            })),
        }
    }

    /// The tenant whose chain this is.
    pub fn tenant(&self) -> &str {
        match &self.backend {
            Backend::Journal(inner) => &inner.tenant,
            Backend::Store(inner) => &inner.tenant,
        }
    }

    /// Commit one record; returns once it is durable against a crash of this
    /// process (journal) or committed (store).
    pub async fn append(&self, entry: AuditEntry) -> Result<AuditReceipt, AuditError> {
        let mut receipts = self.append_all(vec![entry]).await?;
        receipts
            .pop()
            .ok_or_else(|| AuditError("no record was appended".to_string()))
    }

    /// Commit several records, in order: on the journal one locked write for
    /// all of them (a burst of pipelined reads), in the store one after
    /// another. All or none are on record when this returns.
    pub async fn append_all(
        &self,
        entries: Vec<AuditEntry>,
    ) -> Result<Vec<AuditReceipt>, AuditError> {
        match &self.backend {
            Backend::Journal(inner) => append_to_journal(inner, entries).await,
            Backend::Store(inner) => {
                let mut receipts = Vec::with_capacity(entries.len());
                for entry in entries {
                    receipts.push(inner.append(entry).await?);
                }
                Ok(receipts)
            }
        }
    }

    /// Whether a record could be committed now. Checked before a call that
    /// changes something runs, so that no change is made that could not be
    /// put on record (a database down since start, say). Journal: the
    /// chain's head is known (this process appended before, or the journal
    /// ends with a record), or the store, which then holds it, answers.
    /// Store: it answers (one pooled connection's check, through its
    /// circuit breaker).
    pub async fn ready(&self) -> Result<(), AuditError> {
        match &self.backend {
            Backend::Journal(inner) => {
                if inner.state.lock().await.head.is_some() || journal_has_record(&inner.file) {
                    return Ok(());
                }
                inner.store_head().await.map(|_| ())
            }
            Backend::Store(inner) => {
                let store =
                    inner.store.get().await.map_err(|e| {
                        AuditError(format!("the audit store could not be opened: {e}"))
                    })?;
                // One round trip (a pooled connection's check), not a
                // transaction reading the head: the append that follows
                // reads it anyway, under its lock.
                store
                    .reachable()
                    .await
                    .map_err(|e| AuditError(format!("the audit store does not answer: {e}")))
            }
        }
    }

    /// Index everything in the journal now (used before reading the store);
    /// nothing to do when the store is the commit point.
    pub async fn flush_index(&self) -> Result<(), StoreError> {
        let Backend::Journal(inner) = &self.backend else {
            return Ok(());
        };
        let store = inner.store().await.map_err(StoreError::Database)?;
        let seq = IndexCursor::default()
            .index(store.as_ref(), &inner.tenant, &inner.path)
            .await?;
        inner.indexed_through.fetch_max(seq, Ordering::AcqRel);
        Ok(())
    }
}

impl InStore {
    async fn append(&self, entry: AuditEntry) -> Result<AuditReceipt, AuditError> {
        let store = self
            .store
            .get()
            .await
            .map_err(|e| AuditError(format!("the audit store could not be opened: {e}")))?;
        self.caught_up
            .get_or_try_init(|| async {
                index_journal(store.as_ref(), &self.tenant, &self.legacy_journal)
                    .await
                    .map(|_| ())
            })
            .await
            .map_err(|e| AuditError(format!("indexing the old audit journal: {e}")))?;
        let record = store
            .audit_append(&self.tenant, &entry)
            .await
            .map_err(|e| AuditError(e.to_string()))?;
        Ok(AuditReceipt {
            seq: record.seq,
            hash: record.hash,
        })
    }
}

/// Commit records to the journal: one write under the lock, so they land whole and together.
async fn append_to_journal(
    inner: &Inner,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditReceipt>, AuditError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut state = inner.state.lock().await;
    if state.head.is_none() && !journal_has_record(&inner.file) {
        // The head may have to come from the store: open it before taking
        // the journal, so nothing slow happens while other processes wait.
        inner
            .store()
            .await
            .map_err(|e| AuditError(format!("the audit store could not be opened: {e}")))?;
    }
    let lock = FileLock::exclusive(&inner.file).await.map_err(io_audit)?;
    let size = lock.file.metadata().map_err(io_audit)?.len();
    if size != state.known_end
        || state.head.is_none()
        || !ends_with_line(lock.file, size, &state.last_line)
    {
        let (last, valid_end) = read_head(lock.file, size).map_err(io_audit)?;
        if valid_end != size {
            tracing::warn!(at = valid_end, "cutting a torn line from the audit journal");
            lock.file.set_len(valid_end).map_err(io_audit)?;
        }
        let (head, line) = match last {
            Some(last) => last,
            // An empty journal: everything is in the store (or nothing exists yet).
            None => (inner.store_head().await?, Vec::new()),
        };
        state.head = Some(head);
        state.last_line = line;
        state.known_end = valid_end;
    }
    let mut head = state.head.clone().unwrap_or_else(genesis);
    let mut lines = Vec::with_capacity(entries.len() * 512);
    let mut last_line = 0;
    let mut receipts = Vec::with_capacity(entries.len());
    for entry in entries {
        last_line = lines.len();
        let record = AuditRecord::from_owned_entry_with_line(
            &inner.tenant,
            head.seq + 1,
            &head.hash,
            entry,
            &mut lines,
        );
        head = ChainHead {
            seq: record.seq,
            hash: record.hash.clone(),
        };
        receipts.push(AuditReceipt {
            seq: record.seq,
            hash: record.hash,
        });
    }
    // O_APPEND under the flock: the lines land whole at the end.
    (&*lock.file).write_all(&lines).map_err(io_audit)?;
    state.known_end += lines.len() as u64;
    let newest = head.seq;
    state.head = Some(head);
    state.last_line = lines[last_line..].to_vec();
    // The lines just written cannot be indexed yet: cut what is, keep the rest.
    let indexed = inner.indexed_through.load(Ordering::Acquire);
    if state.known_end > inner.rotate_bytes && state.uncut_at != Some(indexed) {
        let max_keep = inner.rotate_bytes / 2;
        match cut_indexed(
            lock.file,
            &inner.path,
            state.known_end,
            newest,
            indexed,
            max_keep,
        ) {
            Ok(Some(end)) => {
                state.known_end = end;
                state.uncut_at = None;
            }
            Ok(None) => state.uncut_at = Some(indexed),
            Err(e) => {
                // Every record is still in the file; where it ends is read again.
                tracing::warn!(error = %e, "cutting back the audit journal failed");
                state.known_end = u64::MAX;
                state.uncut_at = Some(indexed);
            }
        }
    }
    drop(lock);
    drop(state);
    inner.appends.fetch_add(1, Ordering::Release);
    inner.wake_indexer.notify_one();
    if newest - inner.indexed_through.load(Ordering::Acquire) >= INDEX_EARLY {
        inner.index_early.notify_one();
    }
    Ok(receipts)
}

impl Inner {
    async fn store(&self) -> Result<Arc<dyn Store>, String> {
        self.store.get().await
    }

    async fn store_head(&self) -> Result<ChainHead, AuditError> {
        let store = self
            .store()
            .await
            .map_err(|e| AuditError(format!("the audit store could not be opened: {e}")))?;
        let head = store
            .audit_head(&self.tenant)
            .await
            .map_err(|e| AuditError(e.to_string()))?;
        Ok(head.unwrap_or_else(genesis))
    }
}

fn genesis() -> ChainHead {
    ChainHead {
        seq: 0,
        hash: GENESIS_HASH.to_string(),
    }
}

fn io_audit(e: std::io::Error) -> AuditError {
    AuditError(format!("audit journal: {e}"))
}

fn open_journal(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
        .open(path)
}

/// An exclusive `flock` on the journal, released on drop.
struct FileLock<'a> {
    file: &'a File,
}

impl<'a> FileLock<'a> {
    /// Wait for the lock without blocking the runtime's thread: other tasks of
    /// this process (an indexer holding SQLite, a store being opened) must go
    /// on while another process holds the journal, or two processes can wait
    /// on each other for ever.
    async fn exclusive(file: &'a File) -> std::io::Result<Self> {
        let mut pause = Duration::from_micros(20);
        loop {
            match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Self { file }),
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.file, FlockOperation::Unlock);
    }
}

/// Whether the journal ends with a complete record, so the chain's head can
/// be read from it without the store. Read without the lock: a hint, checked
/// again under it by `append`.
fn journal_has_record(file: &File) -> bool {
    file.metadata()
        .is_ok_and(|m| matches!(read_head(file, m.len()), Ok((Some(_), _))))
}

/// The chain's head and the journal line it was read from.
type HeadLine = (ChainHead, Vec<u8>);

/// The head recorded in the journal's last complete line (with the line), and
/// where the complete lines end (a torn tail lies beyond).
fn read_head(file: &File, size: u64) -> std::io::Result<(Option<HeadLine>, u64)> {
    if size == 0 {
        return Ok((None, 0));
    }
    let start = size.saturating_sub(MAX_LINE_BYTES);
    let mut buf = vec![0u8; (size - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
        // No complete line at all in the tail.
        return Ok((None, if start == 0 { 0 } else { size }));
    };
    let valid_end = start + last_nl as u64 + 1;
    let line_start = buf[..last_nl]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    if line_start == 0 && start > 0 {
        return Err(std::io::Error::other(
            "the journal's last line is longer than any record",
        ));
    }
    let record: AuditRecord = serde_json::from_slice(&buf[line_start..last_nl]).map_err(|e| {
        std::io::Error::other(format!("the journal's last line is not a record: {e}"))
    })?;
    let head = ChainHead {
        seq: record.seq,
        hash: record.hash,
    };
    Ok((Some((head, buf[line_start..=last_nl].to_vec())), valid_end))
}

/// Whether `line` ends the journal's first `end` bytes.
fn ends_with_line(file: &File, end: u64, line: &[u8]) -> bool {
    let Some(start) = end.checked_sub(line.len() as u64) else {
        return false;
    };
    let mut buf = vec![0u8; line.len()];
    file.read_exact_at(&mut buf, start).is_ok() && buf == line
}

/// Cut the lines already in the store (seq <= `indexed`) from the front of
/// the journal, which ends at `end` with record `head_seq`, keeping at least
/// the head's line; only when what stays fits in `max_keep` bytes (at most
/// half the file, so cuts are rare and copy little). Returns the new end, or
/// `None` when nothing was cut.
///
/// The kept lines are copied to the front, over bytes they do not overlap,
/// before the file is shortened: a process killed midway leaves every record
/// in place (readers skip repeated seqs and unreadable lines).
fn cut_indexed(
    file: &File,
    path: &Path,
    end: u64,
    head_seq: i64,
    indexed: i64,
    max_keep: u64,
) -> std::io::Result<Option<u64>> {
    let keep_lines = u64::try_from(head_seq - indexed).unwrap_or(0).max(1);
    let Some(start) = start_of_last_lines(file, end, keep_lines, max_keep)? else {
        return Ok(None);
    };
    let mut kept = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut kept, start)?;
    // One chain, a record a line: the first line kept must follow the cut ones.
    let first = kept.split(|&b| b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<AuditRecord>(first) {
        Ok(record) if record.seq == head_seq + 1 - keep_lines as i64 => {}
        _ => return Ok(None),
    }
    debug_assert!(kept.len() as u64 <= start, "copy overlaps what it copies");
    // Writes through the O_APPEND descriptor would land at the end.
    let writer = OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
        .open(path)?;
    let (ours, named) = (file.metadata()?, writer.metadata()?);
    if (ours.dev(), ours.ino()) != (named.dev(), named.ino()) {
        // The path names another file now: not ours to cut.
        return Ok(None);
    }
    writer.write_all_at(&kept, 0)?;
    file.set_len(kept.len() as u64)?;
    Ok(Some(kept.len() as u64))
}

/// Where the last `n` lines of the journal's first `end` bytes start, if
/// that is past 0 and they span at most `max` bytes.
fn start_of_last_lines(file: &File, end: u64, n: u64, max: u64) -> std::io::Result<Option<u64>> {
    // The newline before the lines kept, then theirs.
    let wanted = n + 1;
    let floor = end.saturating_sub(max + 1);
    let mut seen = 0;
    let mut pos = end;
    let mut buf = Vec::new();
    while pos > floor {
        let from = pos.saturating_sub(SCAN_CHUNK).max(floor);
        buf.resize((pos - from) as usize, 0);
        file.read_exact_at(&mut buf, from)?;
        for i in memchr::memrchr_iter(b'\n', &buf) {
            seen += 1;
            if seen == wanted {
                return Ok(Some(from + i as u64 + 1));
            }
        }
        pos = from;
    }
    Ok(None)
}

/// Reads the journal from where it left off and inserts new records.
#[derive(Debug, Default)]
struct IndexCursor {
    offset: u64,
    /// The last line read, which ends the journal at `offset` unless it was cut since.
    anchor: Vec<u8>,
    /// Highest seq known to be in the store; `None` until read from the store.
    indexed: Option<i64>,
}

impl IndexCursor {
    /// Index every complete line past the cursor. Returns the highest seq now in the store.
    async fn index(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        path: &Path,
    ) -> Result<i64, StoreError> {
        let indexed = match self.indexed {
            Some(seq) => seq,
            None => store.audit_head(tenant).await?.map_or(0, |h| h.seq),
        };
        self.indexed = Some(indexed);
        let mut highest = indexed;
        loop {
            let (step, at_end) = match read_from(path, &mut self.offset, &self.anchor) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => {
                    return Err(StoreError::Database(format!(
                        "reading the audit journal: {e}"
                    )));
                }
            };
            highest = self.index_lines(store, tenant, &step, highest).await?;
            if at_end {
                break;
            }
            // A long backlog is indexed in steps; calls go first between them.
            tokio::task::yield_now().await;
        }
        Ok(highest)
    }

    /// Index the complete lines of `bytes` (read at the cursor) whose seq is
    /// past `highest`, and move the cursor past them. Returns the new highest.
    async fn index_lines(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        bytes: &[u8],
        mut highest: i64,
    ) -> Result<i64, StoreError> {
        let mut batch = Vec::new();
        let mut pos = 0;
        let mut last_start = 0;
        // Lines are indexed as they are (the store keeps each record's JSON),
        // only their key read: building every record was most of the
        // indexer's cost.
        while let Some(nl) = memchr::memchr(b'\n', &bytes[pos..]) {
            let line = &bytes[pos..pos + nl];
            last_start = pos;
            pos += nl + 1;
            let parsed = std::str::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(|line| IndexLine::parse(line).map_err(|e| e.to_string()));
            match parsed {
                Ok(line) if line.seq > highest && line.tenant == tenant => {
                    highest = line.seq;
                    batch.push(line);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable audit journal line"),
            }
            if batch.len() >= INDEX_BATCH {
                store.audit_index_lines(&batch).await?;
                batch.clear();
            }
        }
        store.audit_index_lines(&batch).await?;
        self.offset += pos as u64;
        if pos > 0 {
            self.anchor = bytes[last_start..pos].to_vec();
        }
        self.indexed = Some(highest);
        Ok(highest)
    }
}

/// Up to [`INDEX_STEP_BYTES`] of the journal from `offset` (more only for a
/// line longer than that), and whether they reach its end. A journal where
/// `anchor` no longer ends at `offset` was cut back, and may have grown past
/// `offset` again: read it from the start (old records are skipped by seq).
fn read_from(path: &Path, offset: &mut u64, anchor: &[u8]) -> std::io::Result<(Vec<u8>, bool)> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    if size < *offset || !ends_with_line(&file, *offset, anchor) {
        *offset = 0;
    }
    let rest = size - *offset;
    let mut bytes = vec![0u8; rest.min(INDEX_STEP_BYTES as u64) as usize];
    file.read_exact_at(&mut bytes, *offset)?;
    if (bytes.len() as u64) < rest && memchr::memchr(b'\n', &bytes).is_none() {
        // One line longer than a step: read the rest of the journal.
        bytes.resize(rest as usize, 0);
        file.read_exact_at(
            &mut bytes[INDEX_STEP_BYTES..],
            *offset + INDEX_STEP_BYTES as u64,
        )?;
    }
    let at_end = bytes.len() as u64 == rest;
    Ok((bytes, at_end))
}

/// The background indexer: runs shortly after appends (so bursts are indexed
/// in one pass, off the reply path) and on a timer.
async fn index_continuously(strong: Arc<Inner>) {
    let mut cursor = IndexCursor::default();
    // Whether the last pass failed: said once, not every second of an outage.
    let mut failing = false;
    loop {
        let indexed = match strong.store().await {
            Ok(store) => {
                cursor
                    .index(store.as_ref(), &strong.tenant, &strong.path)
                    .await
            }
            Err(e) => Err(StoreError::Unavailable(e)),
        };
        match indexed {
            Ok(seq) => {
                let before = strong.indexed_through.fetch_max(seq, Ordering::AcqRel);
                // A pass follows a burst of calls, whose buffers are free by
                // now: give their pages back rather than keep them resident.
                if seq > before {
                    crate::memory::release_freed_heap();
                }
                if failing {
                    tracing::info!(through = seq, "audit journal indexed again");
                    failing = false;
                }
            }
            // The records are safe in the journal; they are indexed once the
            // store answers again (the cursor has not moved past them).
            Err(e) if !failing => {
                tracing::warn!(error = %e, "indexing the audit journal failed; records stay in the journal and are indexed when the store answers");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = strong.wake_indexer.notified() => wait_for_a_pause(&strong).await,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Once records wait: until appends pause for [`INDEX_QUIET`], at most
/// [`INDEX_DELAY`], or until [`INDEX_EARLY`] records wait.
async fn wait_for_a_pause(inner: &Inner) {
    let deadline = tokio::time::Instant::now() + INDEX_DELAY;
    loop {
        let appended = inner.appends.load(Ordering::Acquire);
        tokio::select! {
            () = tokio::time::sleep(INDEX_QUIET) => {}
            () = inner.index_early.notified() => return,
            () = tokio::time::sleep_until(deadline) => return,
        }
        if inner.appends.load(Ordering::Acquire) == appended {
            return;
        }
    }
}

/// Index a workspace's journal into the store once (for CLI readers).
pub async fn index_journal(
    store: &dyn Store,
    tenant: &str,
    path: &Path,
) -> Result<i64, StoreError> {
    IndexCursor::default().index(store, tenant, path).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use crate::store::audit::verify_chain;
    use std::sync::atomic::AtomicU32;

    fn entry(detail: &str) -> AuditEntry {
        AuditEntry {
            ts: "t".into(),
            session_id: "s".into(),
            client_name: "c".into(),
            tool: "file_read".into(),
            args_sha256: "h".into(),
            args_redacted: "{}".into(),
            decision: "allow".into(),
            rule_ids: String::new(),
            outcome: "ok".into(),
            detail: detail.into(),
            duration_us: 1,
            waiver_ids: String::new(),
            task_ids: String::new(),
        }
    }

    /// A store on `db`, opened as a process of its own would open it.
    fn sqlite(db: &Path) -> Arc<LazyStore> {
        let db = db.to_path_buf();
        LazyStore::new(Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { Ok(Arc::new(SqliteStore::open(&db).await?) as Arc<dyn Store>) })
        }))
    }

    /// Two chains on one journal and database, with their own descriptors,
    /// locks, stores and indexers, as two processes have; the first's store.
    fn two_processes(limit: u64) -> (tempfile::TempDir, Arc<LazyStore>, AuditChain, AuditChain) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let db = dir.path().join("db.sqlite");
        let store = sqlite(&db);
        let a = AuditChain::open_with_limit("default".into(), &path, Arc::clone(&store), limit)
            .unwrap();
        let b = AuditChain::open_with_limit("default".into(), &path, sqlite(&db), limit).unwrap();
        (dir, store, a, b)
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// The next `n` records of a chain after `from`, a line each, of varying lengths.
    fn lines(from: &ChainHead, n: usize) -> (Vec<Vec<u8>>, ChainHead) {
        let mut head = from.clone();
        let mut out = Vec::new();
        for _ in 0..n {
            let detail = "x".repeat((head.seq as usize * 7) % 40);
            let r = AuditRecord::from_entry("default", head.seq + 1, &head.hash, &entry(&detail));
            let mut line = serde_json::to_vec(&r).unwrap();
            line.push(b'\n');
            out.push(line);
            head = ChainHead {
                seq: r.seq,
                hash: r.hash,
            };
        }
        (out, head)
    }

    /// The store holds exactly the records of `receipts`, in chain order, and the chain verifies.
    async fn assert_store_holds(store: &LazyStore, receipts: &[AuditReceipt]) {
        let store = store.get().await.unwrap();
        let report = verify_chain(store.as_ref(), "default", &mut |_| {})
            .await
            .unwrap();
        assert!(report.first_bad.is_none(), "{:?}", report.first_bad);
        let mut want: Vec<_> = receipts.iter().map(|r| (r.seq, r.hash.clone())).collect();
        want.sort();
        let got: Vec<_> = store
            .audit_page("default", 0, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.seq, r.hash))
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the store does not hold the records appended");
        assert_eq!(report.records, want.len() as u64);
    }

    #[test]
    fn head_comes_from_the_last_complete_line_and_a_torn_tail_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let entry = entry("");
        let r1 = AuditRecord::from_entry("default", 1, GENESIS_HASH, &entry);
        let r2 = AuditRecord::from_entry("default", 2, &r1.hash, &entry);
        let mut text = String::new();
        for r in [&r1, &r2] {
            text.push_str(&serde_json::to_string(r).unwrap());
            text.push('\n');
        }
        let complete = text.len() as u64;
        text.push_str("{\"tenant\":\"default\",\"se");
        std::fs::write(&path, &text).unwrap();
        let file = File::open(&path).unwrap();
        let (head, valid_end) = read_head(&file, text.len() as u64).unwrap();
        assert_eq!(head.unwrap().0.seq, 2);
        assert_eq!(valid_end, complete);
        let (head, end) = read_head(&file, 0).unwrap();
        assert!(head.is_none() && end == 0);
    }

    #[tokio::test]
    async fn a_journal_past_its_limit_is_cut_back_to_what_is_not_indexed() {
        const LIMIT: u64 = 4096;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let store = sqlite(&dir.path().join("db.sqlite"));
        let chain = AuditChain::open_with_limit("default".into(), &path, Arc::clone(&store), LIMIT)
            .unwrap();
        let mut receipts = Vec::new();
        let mut largest = 0;
        for i in 0..200 {
            // Now and then a burst, all of whose lines must stay.
            let n = if i % 10 == 9 { 3 } else { 1 };
            let batch = (0..n).map(|k| entry(&format!("call {i}.{k}"))).collect();
            receipts.extend(chain.append_all(batch).await.unwrap());
            largest = largest.max(size(&path));
            chain.flush_index().await.unwrap();
        }
        assert!(
            largest <= 2 * LIMIT,
            "the journal grew to {largest} bytes, past twice its limit ({LIMIT})"
        );
        assert_store_holds(&store, &receipts).await;
        // The head is still read from the journal, without the store.
        let (head, _) = read_head(&File::open(&path).unwrap(), size(&path)).unwrap();
        assert_eq!(head.unwrap().0.seq, receipts.last().unwrap().seq);
    }

    #[test]
    fn a_cut_keeps_the_lines_not_indexed_and_only_when_they_fit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let file = open_journal(&path).unwrap();
        let (written, head) = lines(&genesis(), 10);
        (&file).write_all(&written.concat()).unwrap();
        let end = size(&path);
        // Ten lines do not fit in half the file.
        assert_eq!(
            cut_indexed(&file, &path, end, 10, 0, end / 2).unwrap(),
            None
        );
        assert_eq!(size(&path), end);
        // 8, 9 and 10 are not indexed yet: they stay, in order.
        let kept = written[7..].concat();
        let cut = cut_indexed(&file, &path, end, head.seq, 7, end / 2).unwrap();
        assert_eq!(cut, Some(kept.len() as u64));
        assert_eq!(std::fs::read(&path).unwrap(), kept);
        // All indexed: the head's line stays.
        let end = size(&path);
        assert_eq!(
            cut_indexed(&file, &path, end, 10, 10, end).unwrap(),
            Some(written[9].len() as u64)
        );
        assert_eq!(std::fs::read(&path).unwrap(), written[9]);
    }

    /// Polls the store until it holds a record past `seq` (appending all the
    /// while to `busy`); the time that took.
    async fn time_until_indexed(
        store: &LazyStore,
        seq: i64,
        busy: Option<&AuditChain>,
    ) -> Duration {
        let start = std::time::Instant::now();
        let store = store.get().await.unwrap();
        while store
            .audit_head("default")
            .await
            .unwrap()
            .is_none_or(|head| head.seq <= seq)
        {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "not indexed in 5 s"
            );
            if let Some(chain) = busy {
                chain.append(entry("busy")).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        start.elapsed()
    }

    #[tokio::test]
    async fn the_indexer_waits_for_a_pause_in_appends_but_no_longer_than_its_longest_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir.path().join("db.sqlite"));
        let chain = AuditChain::open(
            "default".into(),
            &dir.path().join("audit.journal"),
            Arc::clone(&store),
        )
        .unwrap();
        // One append, then a pause: indexed soon.
        let first = chain.append(entry("first")).await.unwrap();
        let took = time_until_indexed(&store, 0, None).await;
        assert!(took < INDEX_DELAY / 2, "indexed after {took:?}");
        // An append every ~5 ms: never the pause the indexer waits for.
        let took = time_until_indexed(&store, first.seq, Some(&chain)).await;
        assert!(
            took >= INDEX_DELAY / 2,
            "indexed during the burst after {took:?}"
        );
    }

    /// A journal file opened for appending, and a SQLite store, in a new directory.
    async fn journal_and_store() -> (tempfile::TempDir, PathBuf, SqliteStore, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let store = SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let file = open_journal(&path).unwrap();
        (dir, path, store, file)
    }

    #[tokio::test]
    async fn a_journal_of_several_steps_is_indexed_to_its_end_even_past_a_line_longer_than_a_step()
    {
        let (_dir, path, store, file) = journal_and_store().await;
        let (first, head) = lines(&genesis(), 3000);
        let long = AuditRecord::from_entry(
            "default",
            head.seq + 1,
            &head.hash,
            &entry(&"y".repeat(INDEX_STEP_BYTES + 1000)),
        );
        let mut long_line = serde_json::to_vec(&long).unwrap();
        long_line.push(b'\n');
        let head = ChainHead {
            seq: long.seq,
            hash: long.hash,
        };
        let (last, head) = lines(&head, 10);
        let journal = [first.concat(), long_line, last.concat()].concat();
        assert!(journal.len() > 2 * INDEX_STEP_BYTES);
        (&file).write_all(&journal).unwrap();
        let mut cursor = IndexCursor::default();
        assert_eq!(
            cursor.index(&store, "default", &path).await.unwrap(),
            head.seq
        );
        assert_eq!(cursor.offset, journal.len() as u64);
        let report = verify_chain(&store, "default", &mut |_| {}).await.unwrap();
        assert!(report.first_bad.is_none(), "{:?}", report.first_bad);
        assert_eq!(report.head_seq, head.seq);
    }

    #[tokio::test]
    async fn an_indexer_reads_a_journal_cut_and_grown_past_its_offset_from_the_start() {
        let (_dir, path, store, file) = journal_and_store().await;
        let (written, head) = lines(&genesis(), 10);
        (&file).write_all(&written.concat()).unwrap();
        let mut cursor = IndexCursor::default();
        assert_eq!(cursor.index(&store, "default", &path).await.unwrap(), 10);
        let end = size(&path);
        cut_indexed(&file, &path, end, head.seq, 10, end / 2)
            .unwrap()
            .unwrap();
        // Grown past where the cursor stopped before it reads again.
        let (more, head) = lines(&head, 12);
        (&file).write_all(&more.concat()).unwrap();
        assert!(size(&path) > cursor.offset);
        assert_eq!(
            cursor.index(&store, "default", &path).await.unwrap(),
            head.seq
        );
        let report = verify_chain(&store, "default", &mut |_| {}).await.unwrap();
        assert!(report.first_bad.is_none(), "{:?}", report.first_bad);
        assert_eq!(report.head_seq, head.seq);
    }

    #[tokio::test]
    async fn an_appender_sees_a_cut_that_left_the_journal_at_the_size_it_knew() {
        let (dir, store, a, b) = two_processes(2048);
        let path = dir.path().join("audit.journal");
        let mut receipts = vec![b.append(entry(&"b".repeat(900))).await.unwrap()];
        let b_end = size(&path);
        let mut cut = false;
        for _ in 0..20 {
            let before = size(&path);
            receipts.push(a.append(entry("a")).await.unwrap());
            a.flush_index().await.unwrap();
            if size(&path) < before {
                cut = true;
                break;
            }
        }
        assert!(cut, "the journal was never cut");
        // One more line from `a`, sized to bring the journal back to where `b` left it.
        let (head, _) = read_head(&File::open(&path).unwrap(), size(&path)).unwrap();
        let head = head.unwrap().0;
        let probe = AuditRecord::from_entry("default", head.seq + 1, &head.hash, &entry(""));
        let bare = serde_json::to_vec(&probe).unwrap().len() as u64 + 1;
        let pad = b_end - size(&path) - bare;
        receipts.push(a.append(entry(&"a".repeat(pad as usize))).await.unwrap());
        assert_eq!(size(&path), b_end);
        let last = b.append(entry("b again")).await.unwrap();
        assert_eq!(last.seq, head.seq + 2, "b went on from its own last record");
        receipts.push(last);
        a.flush_index().await.unwrap();
        assert_store_holds(&store, &receipts).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_appending_through_cuts_keep_one_chain_all_indexed() {
        // Each with its own background indexer; no flush while they append.
        let (dir, store, a, b) = two_processes(32 * 1024);
        let path = dir.path().join("audit.journal");
        let cuts_seen = Arc::new(AtomicU32::new(0));
        let run = |chain: AuditChain, name: &'static str| {
            let (path, cuts_seen) = (path.clone(), Arc::clone(&cuts_seen));
            tokio::spawn(async move {
                let mut receipts = Vec::new();
                let mut last = 0;
                for i in 0..1000 {
                    if cuts_seen.load(Ordering::Relaxed) >= 6 {
                        break;
                    }
                    receipts.push(chain.append(entry(&format!("{name} {i}"))).await.unwrap());
                    let now = size(&path);
                    if now < last {
                        cuts_seen.fetch_add(1, Ordering::Relaxed);
                    }
                    last = now;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                receipts
            })
        };
        let (ra, rb) = (run(a.clone(), "a"), run(b, "b"));
        let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
        assert!(
            cuts_seen.load(Ordering::Relaxed) >= 6,
            "the journal was not cut while {} records were appended",
            ra.len() + rb.len()
        );
        for r in [&ra, &rb] {
            assert!(r.windows(2).all(|w| w[0].seq < w[1].seq));
        }
        a.flush_index().await.unwrap();
        assert_store_holds(&store, &[ra, rb].concat()).await;
    }
}
