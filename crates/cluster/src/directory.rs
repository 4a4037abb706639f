//! A node's metadata directory id (KIP-853's `directory.id`): a random
//! UUID written in `<data dir>/raft/directory.id` when the Raft folder is
//! first used, and kept for as long as the folder lives.
//!
//! Raft trusts a voter never to lose its log or its vote. The directory id
//! is how the quorum tells a voter that lost them from the one it was: the
//! leader binds each voter to its directory ([`crate::Command::BindDirectory`])
//! and refuses to take a voter back with another one (see
//! [`crate::Controller::start`]).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use uuid::Uuid;

use crate::ClusterError;

/// The file's name in the Raft folder.
const FILE: &str = "directory.id";
/// Where a new file is written before it is renamed into place.
const TEMP_FILE: &str = "directory.id.tmp";
/// The file's format version.
const FORMAT_VERSION: u32 = 1;
/// Largest file read.
const BYTES_MAX: u64 = 4 << 10;

#[derive(serde::Serialize, serde::Deserialize)]
struct DirectoryFile {
    format_version: u32,
    /// As Kafka prints it (22 characters of URL-safe base64).
    directory_id: String,
}

/// This Raft folder's directory id: the one it holds, or a new one written
/// durably when it holds none (a new folder, or one written before Weir
/// kept directory ids: either way the folder is the node's own).
pub(crate) fn load_or_create(dir: &Path) -> Result<Uuid, ClusterError> {
    let path = dir.join(FILE);
    let corrupt =
        |why: String| ClusterError::Storage(format!("directory id file {}: {why}", path.display()));
    match File::open(&path) {
        Ok(file) => {
            let mut bytes = Vec::new();
            file.take(BYTES_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| corrupt(e.to_string()))?;
            if bytes.len() as u64 > BYTES_MAX {
                return Err(corrupt(format!("larger than {BYTES_MAX} bytes")));
            }
            #[derive(serde::Deserialize)]
            struct Version {
                format_version: u32,
            }
            let version: Version =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
            if version.format_version != FORMAT_VERSION {
                return Err(corrupt(format!(
                    "format_version {} is not one this Weir reads ({FORMAT_VERSION})",
                    version.format_version
                )));
            }
            let file: DirectoryFile =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
            weir_metadata::parse_uuid_text(&file.directory_id)
                .ok_or_else(|| corrupt(format!("'{}' is not a directory id", file.directory_id)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = weir_metadata::new_directory_id();
            let bytes = serde_json::to_vec(&DirectoryFile {
                format_version: FORMAT_VERSION,
                directory_id: weir_metadata::uuid_text(id),
            })
            .map_err(|e| corrupt(e.to_string()))?;
            weir_sync::replace_file(
                &dir.join(TEMP_FILE),
                &path,
                |mut f| f.write_all(&bytes),
                File::sync_data,
            )
            .map_err(|e| corrupt(e.to_string()))?;
            Ok(id)
        }
        Err(e) => Err(corrupt(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_keeps_its_directory_id_and_a_new_folder_gets_another() {
        let (Ok(a), Ok(b)) = (tempfile::tempdir(), tempfile::tempdir()) else {
            panic!("no temporary folder");
        };
        let first = load_or_create(a.path()).ok();
        assert!(first.is_some());
        assert_eq!(load_or_create(a.path()).ok(), first);
        assert_ne!(load_or_create(b.path()).ok(), first);
        // A version this code does not know is refused, not replaced.
        std::fs::write(
            a.path().join(FILE),
            br#"{"format_version":2,"directory_id":"x"}"#,
        )
        .ok();
        assert!(matches!(
            load_or_create(a.path()),
            Err(ClusterError::Storage(_))
        ));
    }
}
