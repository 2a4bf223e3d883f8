//! The snapshot file: how the state machine is written out, shipped and installed.
//!
//! ```text
//!  "CPSNAP01" | u32 meta_len | meta JSON (SnapshotHeader)
//!  { u8 name_len | keyspace name | u32 key_len | key | u32 value_len | value }*
//!  u8 0 (end) | SHA-256 of every byte before it
//! ```
//!
//! Records are written and read one at a time, so building, streaming and installing a snapshot use
//! bounded memory whatever the inventory's size. The trailing checksum catches a truncated or damaged
//! transfer before anything is installed.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"CPSNAP01";
/// Upper bound on one key or value; anything larger means a corrupt file.
const MAX_FIELD: usize = 64 * 1024 * 1024;
const MAX_META: usize = 16 * 1024 * 1024;

/// One record: (keyspace name, key, value).
pub type SnapshotRecord = (String, Vec<u8>, Vec<u8>);

/// What the header of a snapshot file records besides the data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// Format version of the header and record framing.
    pub v: u16,
    pub meta: SnapshotMeta,
    /// Milliseconds since the epoch when the snapshot was built (informational only).
    pub built_at_ms: i64,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Hashes everything that passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub struct SnapshotWriter {
    out: HashingWriter<BufWriter<File>>,
    path: PathBuf,
    records: u64,
}

impl SnapshotWriter {
    pub fn create(path: &Path, header: &SnapshotHeader) -> io::Result<Self> {
        let file = File::create(path)?;
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
        };
        out.write_all(MAGIC)?;
        let meta = serde_json::to_vec(header).map_err(|e| invalid(e.to_string()))?;
        out.write_all(&(meta.len() as u32).to_be_bytes())?;
        out.write_all(&meta)?;
        Ok(SnapshotWriter {
            out,
            path: path.to_path_buf(),
            records: 0,
        })
    }

    pub fn write_record(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> io::Result<()> {
        let name = keyspace.as_bytes();
        if name.is_empty() || name.len() > 255 {
            return Err(invalid(format!("bad keyspace name {keyspace:?}")));
        }
        self.out.write_all(&[name.len() as u8])?;
        self.out.write_all(name)?;
        self.out.write_all(&(key.len() as u32).to_be_bytes())?;
        self.out.write_all(key)?;
        self.out.write_all(&(value.len() as u32).to_be_bytes())?;
        self.out.write_all(value)?;
        self.records += 1;
        Ok(())
    }

    /// Write the end marker and checksum and fsync the file.
    pub fn finish(mut self) -> io::Result<(PathBuf, u64)> {
        self.out.write_all(&[0])?;
        let digest = self.out.hasher.finalize_reset();
        self.out.inner.write_all(&digest)?;
        let file = self.out.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((self.path, self.records))
    }
}

pub struct SnapshotReader {
    input: BufReader<File>,
    hasher: Sha256,
    pub header: SnapshotHeader,
    done: bool,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let mut reader = SnapshotReader {
            input: BufReader::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            header: SnapshotHeader {
                v: 0,
                meta: Default::default(),
                built_at_ms: 0,
            },
            done: false,
        };
        let mut magic = [0u8; 8];
        reader.read_exact_hashed(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid("not a certplane snapshot (bad magic)"));
        }
        let meta_len = reader.read_u32()? as usize;
        if meta_len > MAX_META {
            return Err(invalid("snapshot header too large"));
        }
        let mut meta = vec![0u8; meta_len];
        reader.read_exact_hashed(&mut meta)?;
        reader.header =
            serde_json::from_slice(&meta).map_err(|e| invalid(format!("snapshot header: {e}")))?;
        if reader.header.v != 1 {
            return Err(invalid(format!(
                "unsupported snapshot version {}",
                reader.header.v
            )));
        }
        Ok(reader)
    }

    fn read_exact_hashed(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("snapshot file is truncated")
            } else {
                e
            }
        })?;
        self.hasher.update(&*buf);
        Ok(())
    }

    fn read_u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact_hashed(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn read_field(&mut self) -> io::Result<Vec<u8>> {
        let len = self.read_u32()? as usize;
        if len > MAX_FIELD {
            return Err(invalid("snapshot record too large"));
        }
        let mut buf = vec![0u8; len];
        self.read_exact_hashed(&mut buf)?;
        Ok(buf)
    }

    /// The next (keyspace, key, value), or `None` after the end marker once the checksum matched.
    pub fn next_record(&mut self) -> io::Result<Option<SnapshotRecord>> {
        if self.done {
            return Ok(None);
        }
        let mut len = [0u8; 1];
        self.read_exact_hashed(&mut len)?;
        if len[0] == 0 {
            let expected = self.hasher.finalize_reset();
            let mut found = [0u8; 32];
            self.input
                .read_exact(&mut found)
                .map_err(|_| invalid("snapshot checksum missing"))?;
            if found[..] != expected[..] {
                return Err(invalid("snapshot checksum mismatch"));
            }
            self.done = true;
            return Ok(None);
        }
        let mut name = vec![0u8; len[0] as usize];
        self.read_exact_hashed(&mut name)?;
        let name = String::from_utf8(name).map_err(|_| invalid("keyspace name is not UTF-8"))?;
        let key = self.read_field()?;
        let value = self.read_field()?;
        Ok(Some((name, key, value)))
    }
}

/// Read the header and check the whole file's framing and checksum without installing anything.
pub fn verify_file(path: &Path) -> io::Result<(SnapshotHeader, u64)> {
    let mut reader = SnapshotReader::open(path)?;
    let mut records = 0u64;
    while reader.next_record()?.is_some() {
        records += 1;
    }
    Ok((reader.header, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            v: 1,
            meta: Default::default(),
            built_at_ms: 7,
        }
    }

    #[test]
    fn round_trip_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut w = SnapshotWriter::create(&path, &header()).unwrap();
        for i in 0..1000u32 {
            w.write_record(
                "sm_certificates",
                &i.to_be_bytes(),
                format!("value-{i}").as_bytes(),
            )
            .unwrap();
        }
        let (_, n) = w.finish().unwrap();
        assert_eq!(n, 1000);
        let (h, records) = verify_file(&path).unwrap();
        assert_eq!((h.built_at_ms, records), (7, 1000));

        // Flip one byte in the middle: the checksum must catch it.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        assert!(verify_file(&path).is_err());

        // A truncated transfer is refused too.
        let good = dir.path().join("t");
        let mut w = SnapshotWriter::create(&good, &header()).unwrap();
        w.write_record("sm_meta", b"k", b"v").unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(&good, &bytes[..bytes.len() - 10]).unwrap();
        assert_eq!(
            verify_file(&good).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::write(&good, b"garbage").unwrap();
        assert!(verify_file(&good).is_err());
    }
}
