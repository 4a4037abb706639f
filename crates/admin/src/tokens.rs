//! The admin API's bearer tokens: the file `admin.auth.token.file` names,
//! one token per line (blank lines and lines starting with `#` skipped),
//! read at start and read again when it changes, as the TLS listeners'
//! certificate files are (`weir_server::tls::file_stamp`, checked every
//! [`RELOAD_CHECK_INTERVAL`](weir_server::tls::RELOAD_CHECK_INTERVAL)).
//!
//! Only each token's SHA-256 digest is kept. A presented token is hashed and
//! compared with every digest in constant time ([`subtle`]), all of them
//! every time, so neither the time taken nor an early exit tells a caller
//! how much of a token it guessed, or which one.
//!
//! Bounds: the file is at most [`TOKEN_FILE_BYTES_MAX`] and holds at most
//! [`TOKENS_MAX`] tokens, each [`TOKEN_BYTES_MIN`] to [`TOKEN_BYTES_MAX`]
//! characters of the set an HTTP header and a cookie carry unquoted. A file
//! that breaks one, or holds no token, stops the start; at a reload it is
//! reported once and the tokens in use are kept until the file changes
//! again (so a half-written file never locks every client out, and a token
//! is revoked by a file that still holds at least one token).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

/// The largest token file read, in bytes.
pub const TOKEN_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// The most tokens one file may hold.
pub const TOKENS_MAX: usize = 1024;
/// The shortest token taken, in characters: a shorter one can be guessed.
/// `openssl rand -hex 32` makes one of 64.
pub const TOKEN_BYTES_MIN: usize = 16;
/// The longest token taken, in characters.
pub const TOKEN_BYTES_MAX: usize = 4096;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`TOKEN_FILE_BYTES_MAX`].
    #[error(
        "{} is larger than {TOKEN_FILE_BYTES_MAX} bytes: admin.auth.token.file takes one \
         token per line",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not UTF-8 text.
    #[error("{} is not UTF-8 text: admin.auth.token.file takes one token per line", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no token.
    #[error(
        "{} holds no token: admin.auth.token.file takes one token per line (blank lines and \
         lines starting with # are skipped); make one with `openssl rand -hex 32`",
        path.display()
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file holds more than [`TOKENS_MAX`] tokens.
    #[error("{} holds more than {TOKENS_MAX} tokens", path.display())]
    TooMany {
        /// The file.
        path: PathBuf,
    },
    /// A line's token is shorter than [`TOKEN_BYTES_MIN`] or longer than
    /// [`TOKEN_BYTES_MAX`].
    #[error(
        "{}, line {line}: a token has {TOKEN_BYTES_MIN} to {TOKEN_BYTES_MAX} characters \
         (make one with `openssl rand -hex 32`)",
        path.display()
    )]
    Length {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// A line's token holds a character a header or a cookie cannot carry.
    #[error(
        "{}, line {line}: a token is printable ASCII without spaces, quotes, commas, \
         semicolons or backslashes (it travels in an Authorization header and a cookie)",
        path.display()
    )]
    Character {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// A line repeats the token of an earlier one.
    #[error("{}, line {line}: the token of line {first} again", path.display())]
    Repeated {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The line that holds it first.
        first: usize,
    },
}

/// A token's SHA-256 digest.
type Digest = [u8; 32];

/// The file's size, modification time and inode, as
/// `weir_server::tls::file_stamp` gives them.
type Stamp = Option<(u64, Option<SystemTime>, u64)>;

/// The tokens of `admin.auth.token.file`, kept current.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    /// The file as it was when read, and its tokens' digests in file order.
    current: RwLock<(Stamp, Arc<Vec<Digest>>)>,
    /// The file as it was at the last reload that failed, so a file that
    /// stays broken is reported once, not at every check.
    failed: Mutex<Option<Stamp>>,
}

impl TokenFile {
    /// Read the tokens of `path`. Warns (does not refuse) when every user
    /// of the machine may read it: a Kubernetes secret is mounted so by
    /// default. Blocks on file I/O.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let stamp = weir_server::tls::file_stamp(path);
        let digests = read(path)?;
        Ok(Self {
            path: path.to_owned(),
            current: RwLock::new((stamp, Arc::new(digests))),
            failed: Mutex::new(None),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many tokens are in use.
    pub fn len(&self) -> usize {
        self.digests().len()
    }

    /// Whether no token is in use (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn digests(&self) -> Arc<Vec<Digest>> {
        match self.current.read() {
            Ok(current) => current.1.clone(),
            // A panic while swapping: refuse every token rather than guess.
            Err(_) => Arc::new(Vec::new()),
        }
    }

    /// Which token `presented` is: its place among the file's tokens, from
    /// 1, or `None` when it is none of them. Takes the same time whichever
    /// token, if any, it matches.
    pub fn check(&self, presented: &[u8]) -> Option<usize> {
        let digest: Digest = Sha256::digest(presented).into();
        let mut found = 0_u64;
        for (index, known) in self.digests().iter().enumerate() {
            let place = u64::try_from(index).unwrap_or(u64::MAX).saturating_add(1);
            found = u64::conditional_select(&found, &place, known.ct_eq(&digest));
        }
        (found != 0).then(|| usize::try_from(found).unwrap_or(usize::MAX))
    }

    /// Read the file again if it changed since it was read (and since the
    /// last reread that failed): `None` when nothing changed, else the
    /// count of tokens now in use or why the file was refused. A refused
    /// file keeps the tokens in use. Blocks on file I/O.
    pub fn reload_if_changed(&self) -> Option<Result<usize, TokenFileError>> {
        let now = weir_server::tls::file_stamp(&self.path);
        if self.current.read().ok()?.0 == now {
            return None;
        }
        let mut failed = self.failed.lock().ok()?;
        if failed.as_ref() == Some(&now) {
            return None;
        }
        match read(&self.path) {
            Ok(digests) => {
                *failed = None;
                let count = digests.len();
                if let Ok(mut current) = self.current.write() {
                    *current = (now, Arc::new(digests));
                }
                Some(Ok(count))
            }
            Err(err) => {
                *failed = Some(now);
                Some(Err(err))
            }
        }
    }

    /// Read the file again whenever it changes, so tokens are added and
    /// revoked without a restart. Runs until dropped.
    pub async fn keep_current(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(weir_server::tls::RELOAD_CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let checking = self.clone();
            let Ok(reloaded) =
                tokio::task::spawn_blocking(move || checking.reload_if_changed()).await
            else {
                continue;
            };
            match reloaded {
                None => {}
                Some(Ok(tokens)) => tracing::info!(file = %self.path.display(), tokens,
                    "admin tokens reloaded: requests are checked against the changed file"),
                Some(Err(err)) => tracing::warn!(error = %err,
                    "cannot reload the admin tokens; the ones in use are kept (tried again \
                     when the file changes)"),
            }
        }
    }
}

/// The digests of the tokens in `path`, in file order.
fn read(path: &Path) -> Result<Vec<Digest>, TokenFileError> {
    let read_error = |source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    warn_if_readable_by_all(path, &file);
    let mut bytes = Vec::new();
    file.take(TOKEN_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > TOKEN_FILE_BYTES_MAX {
        return Err(TokenFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| TokenFileError::NotText {
        path: path.to_owned(),
    })?;
    parse(path, &text)
}

/// The digests of the tokens in `text`, checked.
fn parse(path: &Path, text: &str) -> Result<Vec<Digest>, TokenFileError> {
    let mut digests: Vec<Digest> = Vec::new();
    let mut lines_of: Vec<usize> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let token = line.trim();
        if token.is_empty() || token.starts_with('#') {
            continue;
        }
        if !(TOKEN_BYTES_MIN..=TOKEN_BYTES_MAX).contains(&token.len()) {
            return Err(TokenFileError::Length {
                path: path.to_owned(),
                line: line_number,
            });
        }
        if !token.bytes().all(is_token_byte) {
            return Err(TokenFileError::Character {
                path: path.to_owned(),
                line: line_number,
            });
        }
        if digests.len() == TOKENS_MAX {
            return Err(TokenFileError::TooMany {
                path: path.to_owned(),
            });
        }
        let digest: Digest = Sha256::digest(token.as_bytes()).into();
        if let Some(first) = digests.iter().position(|d| *d == digest) {
            return Err(TokenFileError::Repeated {
                path: path.to_owned(),
                line: line_number,
                first: lines_of.get(first).copied().unwrap_or_default(),
            });
        }
        digests.push(digest);
        lines_of.push(line_number);
    }
    if digests.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(digests)
}

/// A byte a token may hold: RFC 6265's cookie-octet, which an HTTP header
/// value carries too (printable ASCII but space, `"`, `,`, `;` and `\`).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_graphic() && !matches!(byte, b'"' | b',' | b';' | b'\\')
}

#[cfg(unix)]
fn warn_if_readable_by_all(path: &Path, file: &std::fs::File) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = file.metadata()
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(file = %path.display(),
            "the admin token file is readable by every user of this machine; \
             `chmod 600` it (or 640 with the broker's group)");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_all(_path: &Path, _file: &std::fs::File) {}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &str = "0123456789abcdef0123456789abcdef";
    const SECOND: &str = "fedcba9876543210fedcba9876543210";

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn tokens_are_numbered_in_file_order_skipping_comments_and_blank_lines() {
        let (_dir, path) = file(&format!("# ops\n\n{FIRST}\n  # ci\n{SECOND}\r\n"));
        let tokens = TokenFile::load(&path).expect("loads");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.check(FIRST.as_bytes()), Some(1));
        assert_eq!(tokens.check(SECOND.as_bytes()), Some(2));
        assert_eq!(tokens.check(b"0123456789abcdef0123456789abcdeX"), None);
        assert_eq!(tokens.check(b""), None);
        assert_eq!(tokens.check(b"# ops"), None);
    }

    #[test]
    fn a_file_without_a_usable_token_is_refused() {
        for (text, expected) in [
            ("# only a comment\n\n", "holds no token"),
            ("short\n", "line 1: a token has 16"),
            (
                &format!("{FIRST}\nwith a space in it 123\n"),
                "line 2: a token is printable",
            ),
            (
                &format!("{FIRST}\n{FIRST}\n"),
                "line 2: the token of line 1 again",
            ),
        ] {
            let (_dir, path) = file(text);
            let err = TokenFile::load(&path).expect_err(text);
            assert!(err.to_string().contains(expected), "{text:?}: {err}");
        }
        let err = TokenFile::load(Path::new("/no/such/tokens")).expect_err("missing");
        assert!(matches!(err, TokenFileError::Read { .. }), "{err}");
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_tokens_in_use() {
        let (_dir, path) = file(&format!("{FIRST}\n"));
        let tokens = TokenFile::load(&path).expect("loads");
        assert!(tokens.reload_if_changed().is_none(), "unchanged");

        // A new file (a new inode) as an atomic replace makes it.
        let next = path.with_extension("new");
        std::fs::write(&next, format!("{SECOND}\n")).expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert_eq!(tokens.reload_if_changed().map(|r| r.ok()), Some(Some(1)));
        assert_eq!(tokens.check(FIRST.as_bytes()), None, "revoked");
        assert_eq!(tokens.check(SECOND.as_bytes()), Some(1));

        std::fs::write(&next, "\n").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert!(matches!(
            tokens.reload_if_changed(),
            Some(Err(TokenFileError::Empty { .. }))
        ));
        assert!(tokens.reload_if_changed().is_none(), "reported once");
        assert_eq!(tokens.check(SECOND.as_bytes()), Some(1), "kept");
    }
}
