//! A file of CRC-framed records appended one at a time and made durable
//! with each append: the metadata store's log and the Raft log of the
//! metadata quorum (`weir-cluster`) are both one. The layout is drawn in
//! docs/format.md ("Record files").
//!
//! A file opens with 16 bytes: an 8-byte magic naming what the file is, a
//! big-endian format version, and 4 reserved bytes. Each record follows as
//! a frame: payload length (u32), CRC32C of sequence number and payload
//! (u32), sequence number (u64), payload, all big-endian.
//!
//! Reading checks every frame. Only the last append can be torn by a
//! crash, so a bad frame that reaches the end of the file is cut off (and
//! the cut made durable); a bad frame with good data after it, a wrong
//! magic, or a version this code does not know refuses the file with a
//! message naming it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use crate::MetadataError;

/// Magic, version, and 4 reserved bytes.
pub const HEADER_BYTES: usize = 16;
/// Before each record: payload length, CRC32C of sequence and payload, sequence.
pub const FRAME_HEADER_BYTES: usize = 16;

/// What a record file is and how large it and its records may be.
#[derive(Debug, Clone, Copy)]
pub struct RecordFileFormat {
    /// The file's first 8 bytes.
    pub magic: &'static [u8; 8],
    /// The one format version this code reads and writes.
    pub version: u32,
    /// Largest record payload.
    pub record_bytes_max: usize,
    /// Largest file read, so a damaged or foreign file cannot make the
    /// reader allocate without bound.
    pub file_bytes_max: u64,
    /// What the file holds, for messages ("metadata log", "Raft log").
    pub what: &'static str,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its sequence number, as written.
    pub seq: u64,
    /// Where its frame starts in the file.
    pub offset: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl RecordFileFormat {
    /// The header a new file starts with.
    pub fn header(&self) -> [u8; HEADER_BYTES] {
        let mut header = [0; HEADER_BYTES];
        header[..8].copy_from_slice(self.magic);
        header[8..12].copy_from_slice(&self.version.to_be_bytes());
        header
    }

    /// One record's frame, or why it cannot be written.
    pub fn encode(&self, seq: u64, payload: &[u8]) -> Result<Vec<u8>, String> {
        if payload.len() > self.record_bytes_max {
            return Err(format!(
                "a {} record of {} bytes is past {}",
                self.what,
                payload.len(),
                self.record_bytes_max
            ));
        }
        let len = u32::try_from(payload.len()).map_err(|e| e.to_string())?;
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&seq.to_be_bytes());
        frame.extend_from_slice(payload);
        let crc = crc32c::crc32c(&frame[8..]);
        frame[4..8].copy_from_slice(&crc.to_be_bytes());
        Ok(frame)
    }

    /// Every record of the file at `path`, and the file's length after a
    /// torn last record, if any, was cut off.
    pub fn read(&self, path: &Path) -> Result<(Vec<Frame>, u64), MetadataError> {
        let corrupt = |at: usize, detail: String| {
            MetadataError::Storage(format!(
                "corrupt {} {} at byte {at}: {detail}",
                self.what,
                path.display()
            ))
        };
        let io_error = |what: &str, e: io::Error| {
            MetadataError::Storage(format!("{what} {}: {e}", path.display()))
        };
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|f| f.take(self.file_bytes_max + 1).read_to_end(&mut bytes))
            .map_err(|e| io_error("cannot read", e))?;
        if bytes.len() as u64 > self.file_bytes_max {
            return Err(corrupt(
                0,
                format!("larger than {} bytes", self.file_bytes_max),
            ));
        }
        let header = bytes
            .get(..HEADER_BYTES)
            .ok_or_else(|| corrupt(0, "shorter than its header".into()))?;
        if header.get(..8) != Some(self.magic.as_slice()) {
            return Err(corrupt(0, format!("not a Weir {} (bad magic)", self.what)));
        }
        let version = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if version != self.version {
            return Err(corrupt(
                8,
                format!(
                    "format version {version} is not one this Weir reads ({}); \
                     it was written by a newer Weir or is damaged",
                    self.version
                ),
            ));
        }
        let mut frames = Vec::new();
        let mut at = HEADER_BYTES;
        let mut torn = None;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let Some(head) = rest.get(..FRAME_HEADER_BYTES) else {
                torn = Some(at);
                break;
            };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            let end = FRAME_HEADER_BYTES.saturating_add(len);
            let frame_ok = len <= self.record_bytes_max
                && rest
                    .get(8..end)
                    .is_some_and(|covered| crc32c::crc32c(covered) == crc);
            if !frame_ok {
                if len > self.record_bytes_max || end >= rest.len() || rest.iter().all(|&b| b == 0)
                {
                    torn = Some(at);
                    break;
                }
                return Err(corrupt(at, "a record fails its CRC32C".into()));
            }
            let mut seq = [0; 8];
            seq.copy_from_slice(&head[8..16]);
            frames.push(Frame {
                seq: u64::from_be_bytes(seq),
                offset: at as u64,
                payload: rest[FRAME_HEADER_BYTES..end].to_vec(),
            });
            at += end;
        }
        if let Some(cut) = torn {
            tracing::warn!(
                file = %path.display(),
                bytes = bytes.len() - cut,
                "cut a torn {} record left by a crash",
                self.what
            );
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|file| {
                    file.set_len(cut as u64)?;
                    file.sync_all()
                })
                .map_err(|e| io_error("cannot truncate", e))?;
            return Ok((frames, cut as u64));
        }
        Ok((frames, bytes.len() as u64))
    }
}
