//! The node's single RocksDB instance: opening it, its column families, and error conversion.
//!
//! One database holds everything a node persists, so one WAL orders every write (DESIGN §4):
//!
//! ```text
//! <data dir>/
//!   raft_log    index (u64 BE) -> versioned entry         (log_store.rs)
//!   raft_meta   "vote" | "committed" | "last_purged" -> versioned JSON
//!   sm_*        one column family per certplane_core::Keyspace (sm_store.rs)
//! ```
//!
//! A synced write (such as the vote) therefore also makes every earlier write durable, and the state
//! machine and the log can never be recovered from two different points in time.

use std::io;
use std::path::Path;
use std::sync::Arc;

use certplane_core::Keyspace;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, DB,
};

/// Raft log entries, keyed by log index.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Raft metadata that is not an entry: vote, committed log id, last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";

/// Block cache shared by every column family. Modest on purpose: the hot working set is the tail of
/// the log and the indexes the request path touches; the OS page cache holds the rest.
const BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Compaction and flush threads. RocksDB's default grows with cores; a control plane shares its host
/// with other services and its write rate is low, so two are enough.
const MAX_BACKGROUND_JOBS: i32 = 2;

/// Bloom filter size for the state machine's column families: about 1 % false positives.
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// Compression by LSM level for the state machine's column families: none for level 0 (memtable
/// flushes), LZ4 for every level compaction writes.
const COMPRESSION_PER_LEVEL: [DBCompressionType; 7] = [
    DBCompressionType::None,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
];

/// Every column family certplane itself uses: the Raft log, its metadata, and the state machine's.
pub fn column_family_names() -> Vec<&'static str> {
    let mut names = vec![CF_RAFT_LOG, CF_RAFT_META];
    names.extend(Keyspace::ALL.iter().map(|ks| ks.name()));
    names
}

/// Opens (creating if needed) the node's database with all of certplane's column families.
///
/// The WAL stays enabled: the log store acknowledges an append only after `flush_wal(true)`, which
/// is meaningless without it.
pub fn open_db(path: &Path) -> Result<Arc<DB>, io::Error> {
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let cf_options = |name: &str| {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let mut opts = Options::default();
        if name == CF_RAFT_LOG {
            // Entries are written once and deleted once a snapshot covers them: compressing them
            // only costs CPU on the write path (decision 0017).
            opts.set_compression_type(DBCompressionType::None);
        } else {
            // Point reads of absent keys are common in apply (a new id, serial or fingerprint is
            // checked before it is written): a Bloom filter answers them without reading blocks.
            table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
            // Flushes (level 0) stay uncompressed, so the apply path's memtable turnover costs no
            // compression; compaction below level 0 compresses what stays (decision 0017).
            opts.set_compression_type(DBCompressionType::Lz4);
            opts.set_compression_per_level(&COMPRESSION_PER_LEVEL);
        }
        opts.set_block_based_table_factory(&table);
        opts
    };

    let mut db_opts = cf_options(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(MAX_BACKGROUND_JOBS);

    let mut names: Vec<String> = column_family_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    // RocksDB refuses to open a database without naming all of its column families. One we do not
    // know was written by a newer certplane; open it (and leave it alone) rather than fail to start.
    // `list_cf` fails when the database does not exist yet, which is the normal first start.
    if let Ok(existing) = DB::list_cf(&db_opts, path) {
        for name in existing {
            if name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME && !names.contains(&name) {
                tracing::warn!(column_family = %name, "opening unknown RocksDB column family");
                names.push(name);
            }
        }
    }

    let descriptors = names.into_iter().map(|name| {
        let opts = cf_options(&name);
        ColumnFamilyDescriptor::new(name, opts)
    });
    let db = DB::open_cf_descriptors(&db_opts, path, descriptors)
        .map_err(|e| io_error(&format!("opening RocksDB at {}", path.display()), e))?;
    Ok(Arc::new(db))
}

/// Looks up a column family, with an error (not a panic) if the database lacks it, e.g. because it
/// was opened by something other than [`open_db`].
pub fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, io::Error> {
    db.cf_handle(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "RocksDB column family `{name}` is missing; open the database with db::open_db"
            ),
        )
    })
}

/// Converts a RocksDB error, keeping its message and saying what we were doing.
///
/// Corruption becomes `InvalidData`, so callers can tell damaged data from a failing disk.
pub fn io_error(context: &str, err: rocksdb::Error) -> io::Error {
    let kind = match err.kind() {
        rocksdb::ErrorKind::Corruption => io::ErrorKind::InvalidData,
        rocksdb::ErrorKind::NotFound => io::ErrorKind::NotFound,
        rocksdb::ErrorKind::TimedOut => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{context}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_every_column_family_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(dir.path()).unwrap();
            for name in column_family_names() {
                cf(&db, name).unwrap();
            }
            db.put_cf(cf(&db, CF_RAFT_META).unwrap(), b"k", b"v")
                .unwrap();
        }
        let db = open_db(dir.path()).unwrap();
        assert_eq!(
            db.get_cf(cf(&db, CF_RAFT_META).unwrap(), b"k")
                .unwrap()
                .as_deref(),
            Some(&b"v"[..])
        );
    }

    #[test]
    fn missing_column_family_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let Err(err) = cf(&db, "no_such_cf") else {
            panic!("a missing column family must be an error")
        };
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("no_such_cf"));
    }

    #[test]
    fn unknown_column_family_from_a_newer_version_does_not_prevent_opening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            let mut db = DB::open(&opts, dir.path()).unwrap();
            db.create_cf("from_the_future", &Options::default())
                .unwrap();
        }
        let db = open_db(dir.path()).unwrap();
        cf(&db, "from_the_future").unwrap();
        cf(&db, CF_RAFT_LOG).unwrap();
    }
}
