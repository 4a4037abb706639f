//! TLS on a listener whose security protocol is `SSL` or `SASL_SSL`: the rustls server
//! configuration, built from Kafka's PEM settings (`ssl.keystore.location`,
//! `ssl.truststore.location`, `ssl.client.auth`), rebuilt when those files
//! change, and the principal a client certificate names
//! (`ssl.principal.mapping.rules`).
//!
//! A reload swaps the configuration new handshakes use; sessions already
//! established keep theirs, so no connection is dropped. A reload that
//! fails (a file half-written by a renewal, a key that does not match its
//! certificate) keeps the configuration in use, is reported once, and is
//! tried again once the files change again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use weir_auth::{KafkaPrincipal, SslPrincipalMapper};

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `ssl.client.auth`: whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is asked for (Kafka's default).
    None,
    /// A certificate is asked for; a client without one is still served,
    /// as `User:ANONYMOUS`.
    Requested,
    /// A client without a certificate that the truststore's CAs signed is
    /// refused during the handshake.
    Required,
}

impl ClientAuth {
    /// Kafka's spelling: `none`, `requested` or `required`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "none" => Some(Self::None),
            "requested" => Some(Self::Requested),
            "required" => Some(Self::Required),
            _ => None,
        }
    }
}

/// Where a listener's TLS settings come from.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// `ssl.keystore.location`: a PEM file holding the broker's private key
    /// and its certificate chain (Kafka's PEM keystore layout).
    pub keystore: PathBuf,
    /// `ssl.truststore.location`: a PEM file of the CA certificates client
    /// certificates are checked against.
    pub truststore: Option<PathBuf>,
    /// `ssl.client.auth`.
    pub client_auth: ClientAuth,
    /// `ssl.principal.mapping.rules`.
    pub principal_mapping: SslPrincipalMapper,
}

/// Why a listener's TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file cannot be parsed.
    #[error("{}: not a PEM file Weir can read: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The keystore holds no certificate.
    #[error(
        "{} holds no certificate: ssl.keystore.location takes a PEM file with the \
         private key and the certificate chain",
        path.display()
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The keystore holds no private key Weir can use.
    #[error(
        "{} holds no private key: ssl.keystore.location takes a PEM file with the \
         private key (PKCS#8, PKCS#1 or SEC1) and the certificate chain",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The keystore's private key is encrypted.
    #[error(
        "{}: the private key is encrypted, and Weir reads only unencrypted keys \
         (ssl.key.password is not supported); decrypt it with \
         `openssl pkcs8 -in KEY -out KEY.pem -nocrypt` and keep the file readable \
         by the broker only",
        path.display()
    )]
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The truststore holds no certificate.
    #[error("{} holds no CA certificate (ssl.truststore.location)", path.display())]
    NoTrustedCertificate {
        /// The file.
        path: PathBuf,
    },
    /// Client certificates are asked for, but nothing says whom to trust.
    #[error(
        "ssl.client.auth={0} needs ssl.truststore.location: a PEM file of the CA \
         certificates that sign client certificates"
    )]
    NoTruststore(&'static str),
    /// rustls refused the key, the chain, or the CAs.
    #[error("{}: {reason}", path.display())]
    Refused {
        /// The file at fault.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The size, modification time and inode of each file a configuration
/// was built from: a renewal that rewrites or replaces a file changes one.
pub(crate) type Stamp = Vec<Option<(u64, Option<SystemTime>, u64)>>;

/// The TLS configuration of one listener, rebuilt when its files change.
#[derive(Debug)]
pub struct TlsAcceptor {
    settings: TlsSettings,
    current: RwLock<(Stamp, Arc<ServerConfig>)>,
    /// The files as they were at the last reload that failed, so a file
    /// that stays broken is reported once, not at every check.
    failed: std::sync::Mutex<Option<Stamp>>,
}

impl TlsAcceptor {
    /// Build the configuration from `settings`' files.
    pub fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        let stamp = stamp(&settings);
        let config = build(&settings)?;
        Ok(Self {
            settings,
            current: RwLock::new((stamp, config)),
            failed: std::sync::Mutex::new(None),
        })
    }

    /// The configuration a new handshake uses (also the admin listener's,
    /// `weir-admin`).
    pub fn config(&self) -> Option<Arc<ServerConfig>> {
        self.current.read().ok().map(|current| current.1.clone())
    }

    /// Rebuild the configuration if a file changed since it was built
    /// (and since the last rebuild that failed): `None` when nothing
    /// changed, else whether the rebuild worked. A failed rebuild keeps the
    /// configuration in use. Blocks on file I/O.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamp(&self.settings);
        if self.current.read().ok()?.0 == now {
            return None;
        }
        let mut failed = self.failed.lock().ok()?;
        if failed.as_ref() == Some(&now) {
            return None;
        }
        match build(&self.settings) {
            Ok(config) => {
                *failed = None;
                if let Ok(mut current) = self.current.write() {
                    *current = (now, config);
                }
                Some(Ok(()))
            }
            Err(err) => {
                *failed = Some(now);
                Some(Err(err))
            }
        }
    }

    /// The principal of a client that presented `certificates` (its own
    /// first): its subject name mapped by `ssl.principal.mapping.rules`,
    /// or `User:ANONYMOUS` when it presented none. An error when the name
    /// cannot be read or no rule maps it: the connection is closed.
    pub fn principal(
        &self,
        certificates: Option<&[CertificateDer<'_>]>,
    ) -> Result<KafkaPrincipal, String> {
        let Some(own) = certificates.and_then(<[_]>::first) else {
            return Ok(KafkaPrincipal::anonymous());
        };
        let name = weir_auth::subject_name(own).map_err(|e| e.to_string())?;
        self.settings
            .principal_mapping
            .principal(&name)
            .map_err(|e| e.to_string())
    }
}

fn stamp(settings: &TlsSettings) -> Stamp {
    std::iter::once(&settings.keystore)
        .chain(settings.truststore.as_ref())
        .map(|path| file_stamp(path))
        .collect()
}

/// One file's size, modification time and inode; `None` when it cannot
/// be read. Also how the OAUTHBEARER JWKS file is watched (`jwks.rs`), and
/// the admin listener's token file (`weir-admin`).
pub fn file_stamp(path: &Path) -> Option<(u64, Option<SystemTime>, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok(), inode(&meta)))
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

fn build(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = keystore(&settings.keystore)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(&settings.keystore, &e))?;
    let builder = match settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Requested | ClientAuth::Required => {
            let wanted = if settings.client_auth == ClientAuth::Required {
                "required"
            } else {
                "requested"
            };
            let path = settings
                .truststore
                .as_deref()
                .ok_or(TlsError::NoTruststore(wanted))?;
            let roots = Arc::new(truststore(path)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if settings.client_auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| refused(path, &e))?)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| refused(&settings.keystore, &e))?;
    Ok(Arc::new(config))
}

fn refused(path: &Path, reason: &dyn std::fmt::Display) -> TlsError {
    TlsError::Refused {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// The broker's certificate chain and private key from a PEM keystore.
fn keystore(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let pem = read(path)?;
    let chain = certificates(path, &pem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok((chain, key)),
        Err(_) if memchr::memmem::find(&pem, b"ENCRYPTED PRIVATE KEY").is_some() => {
            Err(TlsError::EncryptedKey {
                path: path.to_owned(),
            })
        }
        Err(_) => Err(TlsError::NoPrivateKey {
            path: path.to_owned(),
        }),
    }
}

/// The CAs of a PEM truststore.
fn truststore(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = read(path)?;
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path, &pem)? {
        roots
            .add(certificate)
            .map_err(|e| refused(path, &format!("a CA certificate is not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoTrustedCertificate {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}
