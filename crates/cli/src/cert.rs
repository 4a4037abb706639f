//! `weir cert dev`: a certificate authority of its own and a broker and a
//! client certificate signed by it, written as PEM files, for trying TLS and
//! mutual TLS (mTLS) listeners on one machine. It talks to no broker.
//!
//! The files are laid out as Kafka and librdkafka take them: the CA
//! certificate is the truststore (`ssl.truststore.location`,
//! `ssl.ca.location`), and `broker.pem` is Kafka's PEM keystore (the private
//! key, then the certificate chain). Keys are ECDSA P-256, made by rcgen on
//! ring. Private keys (and the `.pem` files holding them) are written with
//! mode 0600. Existing files are only overwritten with `--force`, so a
//! second run cannot silently replace a CA that brokers already trust.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::json;
use time::{Duration, OffsetDateTime};
use weir_auth::{SslPrincipalMapper, subject_name};

use crate::{CliError, Result, print_json, print_out, usage};

/// `--days` when not given.
const DAYS_DEFAULT: u32 = 365;
/// The longest validity `--days` may ask for: ten years.
const DAYS_MAX: u32 = 3_650;
/// How far before now the certificates start to be valid, so that a peer
/// whose clock is a little behind this machine's still accepts them.
const BACKDATE_MINUTES: i64 = 60;
/// The most `--host` names one broker certificate may carry.
const HOSTS_MAX: usize = 100;
/// The longest common name X.509 allows (RFC 5280's ub-common-name).
const COMMON_NAME_CHARS_MAX: usize = 64;
/// The longest DNS name (RFC 1035), and the longest label in one.
const DNS_NAME_BYTES_MAX: usize = 253;
const DNS_LABEL_BYTES_MAX: usize = 63;
/// The hosts the broker certificate names when no `--host` is given.
const HOSTS_DEFAULT: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// The port of the SSL listener the printed broker settings open (Kafka's
/// usual SSL port, beside 9092 for PLAINTEXT).
const SSL_PORT: u16 = 9093;

const CERT_EXAMPLES: &str = "\
Examples:
  weir cert dev
  weir cert dev --dir /tmp/weir-tls --host localhost --host 127.0.0.1 --host broker.test
  weir cert dev --client alice --days 30 --force --json

These certificates are for trying TLS on one machine: anyone who can read
ca.key can make certificates the broker trusts.";

/// `weir cert`.
#[derive(Debug, Args)]
#[command(after_help = CERT_EXAMPLES)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
    /// Print the result as one JSON document (schema in docs/cli.md).
    #[arg(long, global = true)]
    json: bool,
}

/// `weir cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Write a development CA, and a broker and a client certificate signed
    /// by it, for trying TLS and mTLS listeners locally.
    #[command(after_help = "\
Examples:
  weir cert dev
  weir cert dev --dir certs --host localhost --host 10.0.0.5 --host kafka.test
  weir cert dev --client alice --days 30 --force

Writes to DIR:
  ca.crt, ca.key          the CA: ca.crt is the truststore (ssl.truststore.location,
                          librdkafka ssl.ca.location)
  broker.crt, broker.key  the broker's certificate (serverAuth and clientAuth, for
                          every --host) and private key
  broker.pem              the broker's key, then its certificate chain: Kafka's PEM
                          keystore (ssl.keystore.location)
  client.crt, client.key  the client's certificate (clientAuth, CN=--client) and key
                          (librdkafka ssl.certificate.location and ssl.key.location)
  client.pem              the client's key and certificate chain (a PEM keystore)

Then prints the broker settings (--set ...) and the client settings to use.
Private keys are written with mode 0600. Refuses (exit code 1) to overwrite
any of these files unless --force is given. Under the default
ssl.principal.mapping.rules the client is User:CN=client.")]
    Dev(DevArgs),
}

/// `weir cert dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The folder to write to; created if missing.
    #[arg(long, default_value = "weir-certs", value_name = "DIR")]
    dir: PathBuf,
    /// A DNS name or IP address the broker certificate is valid for
    /// (repeatable); the first is also its common name. [default:
    /// localhost, 127.0.0.1, ::1]
    #[arg(long = "host", value_name = "NAME", value_parser = parse_host)]
    hosts: Vec<Host>,
    /// The client certificate's common name; its principal is then
    /// User:CN=<CN> under the default mapping rules.
    #[arg(long, default_value = "client", value_name = "CN", value_parser = parse_common_name)]
    client: String,
    /// How many days the certificates are valid.
    #[arg(long, default_value_t = DAYS_DEFAULT, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(DAYS_MAX)))]
    days: u32,
    /// Overwrite the files if they exist.
    #[arg(long)]
    force: bool,
}

/// Runs a `weir cert` command.
pub fn run(args: CertArgs) -> Result<()> {
    match args.command {
        CertCommand::Dev(dev_args) => dev(dev_args, args.json),
    }
}

/// A name a broker certificate is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name (a `dNSName` SAN).
    Dns(String),
    /// An IP address (an `iPAddress` SAN).
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Dns(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Parses `--host`: an IP address if it reads as one, else a DNS name of
/// letters, digits and hyphens in dot-separated labels, where the first
/// label may be `*` (a wildcard).
pub fn parse_host(arg: &str) -> Result<Host, String> {
    if let Ok(ip) = arg.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let bad = |why: &str| format!("{arg:?} is neither an IP address nor a DNS name: {why}");
    if arg.is_empty() {
        return Err(bad("it is empty"));
    }
    if arg.len() > DNS_NAME_BYTES_MAX {
        return Err(bad(&format!("longer than {DNS_NAME_BYTES_MAX} characters")));
    }
    for (i, label) in arg.split('.').enumerate() {
        if i == 0 && label == "*" {
            continue;
        }
        if label.is_empty() || label.len() > DNS_LABEL_BYTES_MAX {
            return Err(bad(&format!(
                "each dot-separated part must have 1 to {DNS_LABEL_BYTES_MAX} characters"
            )));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(bad(
                "only ASCII letters, digits and inner hyphens are allowed in each part",
            ));
        }
    }
    Ok(Host::Dns(arg.to_owned()))
}

/// Parses `--client`: a common name of 1 to 64 characters.
pub fn parse_common_name(arg: &str) -> Result<String, String> {
    let chars = arg.chars().count();
    if chars == 0 || chars > COMMON_NAME_CHARS_MAX {
        return Err(format!(
            "a common name has 1 to {COMMON_NAME_CHARS_MAX} characters, not {chars}"
        ));
    }
    Ok(arg.to_owned())
}

/// The files `weir cert dev` writes, by name in `--dir`.
const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const BROKER_CERT: &str = "broker.crt";
const BROKER_KEY: &str = "broker.key";
const BROKER_PEM: &str = "broker.pem";
const CLIENT_CERT: &str = "client.crt";
const CLIENT_KEY: &str = "client.key";
const CLIENT_PEM: &str = "client.pem";

/// The certificates and keys of one run, in PEM, before anything is written.
#[derive(Debug)]
pub struct DevCertificates {
    /// The CA's certificate.
    pub ca_cert: String,
    /// The CA's private key (PKCS#8).
    pub ca_key: String,
    /// The broker's certificate.
    pub broker_cert: String,
    /// The broker's private key (PKCS#8).
    pub broker_key: String,
    /// The client's certificate.
    pub client_cert: String,
    /// The client's private key (PKCS#8).
    pub client_key: String,
    /// The client's certificate in DER, for its principal.
    pub client_der: Vec<u8>,
}

impl DevCertificates {
    /// Each file to write: its name, its contents, and whether it holds a
    /// private key (written with mode 0600).
    fn files(&self) -> [(&'static str, String, bool); 8] {
        // Kafka's PEM keystore: the key, then the chain from the leaf up.
        let keystore = |key: &str, cert: &str| format!("{key}{cert}{}", self.ca_cert);
        [
            (CA_CERT, self.ca_cert.clone(), false),
            (CA_KEY, self.ca_key.clone(), true),
            (BROKER_CERT, self.broker_cert.clone(), false),
            (BROKER_KEY, self.broker_key.clone(), true),
            (
                BROKER_PEM,
                keystore(&self.broker_key, &self.broker_cert),
                true,
            ),
            (CLIENT_CERT, self.client_cert.clone(), false),
            (CLIENT_KEY, self.client_key.clone(), true),
            (
                CLIENT_PEM,
                keystore(&self.client_key, &self.client_cert),
                true,
            ),
        ]
    }
}

/// Wraps an rcgen error with what could not be made (for `map_err`).
fn cert_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> CliError {
    move |source| CliError::Certificate {
        what: what.into(),
        source,
    }
}

/// Makes a CA and a broker and a client certificate signed by it, valid
/// from a little before `now` for `days` days. The broker certificate names
/// every host (the first also as its common name), the client certificate
/// has `client` as its common name.
pub fn generate(
    hosts: &[Host],
    client: &str,
    days: u32,
    now: OffsetDateTime,
) -> Result<DevCertificates> {
    let first_host = hosts
        .first()
        .ok_or_else(|| usage("the broker certificate needs at least one --host"))?;
    let not_before = now - Duration::minutes(BACKDATE_MINUTES);
    let not_after = now + Duration::days(i64::from(days));
    let validity = |params: &mut CertificateParams| {
        params.not_before = not_before;
        params.not_after = not_after;
    };

    let ca_key = KeyPair::generate().map_err(cert_error("cannot make the CA's key"))?;
    let mut ca = CertificateParams::default();
    validity(&mut ca);
    // A name of its own per run, so that two development CAs a machine
    // trusts are told apart.
    let ca_id = uuid::Uuid::new_v4().simple().to_string();
    ca.distinguished_name = common_name(&format!(
        "Weir development CA {}",
        ca_id.get(..8).unwrap_or(&ca_id)
    ));
    // It signs end-entity certificates only.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(cert_error("cannot make the CA certificate"))?;
    let issuer = Issuer::from_params(&ca, &ca_key);

    let mut broker = CertificateParams::default();
    validity(&mut broker);
    broker.distinguished_name = common_name(&first_host.to_string());
    broker.subject_alt_names = hosts
        .iter()
        .map(|host| match host {
            Host::Dns(name) => Ia5String::try_from(name.as_str()).map(SanType::DnsName),
            Host::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, _>>()
        .map_err(cert_error("cannot name the broker's hosts"))?;
    // A broker also connects to other brokers with its keystore, as a client.
    broker.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf(&mut broker);
    let broker_key = KeyPair::generate().map_err(cert_error("cannot make the broker's key"))?;
    let broker_cert = broker
        .signed_by(&broker_key, &issuer)
        .map_err(cert_error("cannot make the broker certificate"))?;

    let mut client_params = CertificateParams::default();
    validity(&mut client_params);
    client_params.distinguished_name = common_name(client);
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf(&mut client_params);
    let client_key = KeyPair::generate().map_err(cert_error("cannot make the client's key"))?;
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .map_err(cert_error("cannot make the client certificate"))?;

    Ok(DevCertificates {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        broker_cert: broker_cert.pem(),
        broker_key: broker_key.serialize_pem(),
        client_der: client_cert.der().to_vec(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

/// A name of one common name (rcgen's default name is its own).
fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// What both end-entity certificates share: not a CA, a key for
/// signatures (ECDSA signs the handshake; it encrypts no keys), and a link
/// to the CA's key.
fn leaf(params: &mut CertificateParams) {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
}

/// `weir cert dev`.
fn dev(args: DevArgs, json: bool) -> Result<()> {
    let hosts: Vec<Host> = if args.hosts.is_empty() {
        HOSTS_DEFAULT
            .iter()
            .map(|host| parse_host(host).map_err(usage))
            .collect::<Result<_>>()?
    } else {
        args.hosts
    };
    if hosts.len() > HOSTS_MAX {
        return Err(usage(format!(
            "--host given {} times; a certificate names at most {HOSTS_MAX} hosts",
            hosts.len()
        )));
    }
    let certificates = generate(&hosts, &args.client, args.days, OffsetDateTime::now_utc())?;
    let principal = client_principal(&certificates.client_der)?;
    let dir = write_files(&args.dir, &certificates, args.force)?;
    let path = |name: &str| dir.join(name).display().to_string();
    let broker_settings = broker_settings(&dir, &hosts);
    let client_settings = client_settings(&dir, &hosts);
    if json {
        return print_json(&json!({
            "dir": dir.display().to_string(),
            "ca_cert": path(CA_CERT),
            "ca_key": path(CA_KEY),
            "broker_cert": path(BROKER_CERT),
            "broker_key": path(BROKER_KEY),
            "broker_pem": path(BROKER_PEM),
            "client_cert": path(CLIENT_CERT),
            "client_key": path(CLIENT_KEY),
            "client_pem": path(CLIENT_PEM),
            "hosts": hosts.iter().map(Host::to_string).collect::<Vec<_>>(),
            "client_principal": principal,
            "days": args.days,
            "broker_settings": broker_settings,
            "client_settings": client_settings,
        }));
    }
    let hosts_text = hosts
        .iter()
        .map(Host::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let files = [
        (CA_CERT, "the CA certificate: the truststore".to_owned()),
        (
            CA_KEY,
            "the CA's private key: keep it to yourself".to_owned(),
        ),
        (
            BROKER_CERT,
            format!("the broker certificate, for {hosts_text}"),
        ),
        (BROKER_KEY, "the broker's private key".to_owned()),
        (
            BROKER_PEM,
            "the broker's key and certificate chain: its keystore".to_owned(),
        ),
        (
            CLIENT_CERT,
            format!("the client certificate, principal {principal}"),
        ),
        (CLIENT_KEY, "the client's private key".to_owned()),
        (
            CLIENT_PEM,
            "the client's key and certificate chain".to_owned(),
        ),
    ];
    let mut out = format!(
        "wrote a development CA and a broker and a client certificate, valid for {} days, to {}:\n",
        args.days,
        dir.display()
    );
    for (name, what) in files {
        out.push_str(&format!("  {name:<10}  {what}\n"));
    }
    out.push_str("\nbroker (weir serve):\n  ");
    out.push_str(
        &broker_settings
            .iter()
            .map(|setting| format!("--set {setting}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    out.push_str("\n\nclients (librdkafka properties):\n");
    for setting in &client_settings {
        out.push_str(&format!("  {setting}\n"));
    }
    print_out(&out)?;
    Ok(())
}

/// The principal the client certificate gets under Kafka's default
/// `ssl.principal.mapping.rules`.
fn client_principal(client_der: &[u8]) -> Result<String> {
    let subject = subject_name(client_der)
        .map_err(|err| CliError::Failed(format!("cannot read the client certificate: {err}")))?;
    SslPrincipalMapper::default()
        .principal(&subject)
        .map(|principal| principal.to_string())
        .map_err(|err| CliError::Failed(err.to_string()))
}

/// The broker settings for an SSL listener that requires client
/// certificates signed by the CA. It listens on the first IP address among
/// the hosts, or on every address when there is none.
fn broker_settings(dir: &Path, hosts: &[Host]) -> Vec<String> {
    let listen = first_ip(hosts).map_or_else(|| format!("0.0.0.0:{SSL_PORT}"), host_port);
    vec![
        format!("listeners=SSL://{listen}"),
        format!("ssl.keystore.location={}", dir.join(BROKER_PEM).display()),
        format!("ssl.truststore.location={}", dir.join(CA_CERT).display()),
        "ssl.client.auth=required".to_owned(),
    ]
}

/// librdkafka's settings for a client with the client certificate. It
/// bootstraps from the address the broker listens on when that is one of
/// the hosts, else from the first host; the certificate names either.
fn client_settings(dir: &Path, hosts: &[Host]) -> Vec<String> {
    let mut settings = Vec::new();
    if let Some(bootstrap) = first_ip(hosts).or(hosts.first()) {
        settings.push(format!("bootstrap.servers={}", host_port(bootstrap)));
    }
    settings.extend([
        "security.protocol=ssl".to_owned(),
        format!("ssl.ca.location={}", dir.join(CA_CERT).display()),
        format!(
            "ssl.certificate.location={}",
            dir.join(CLIENT_CERT).display()
        ),
        format!("ssl.key.location={}", dir.join(CLIENT_KEY).display()),
    ]);
    settings
}

/// The first IP address among the hosts.
fn first_ip(hosts: &[Host]) -> Option<&Host> {
    hosts.iter().find(|host| matches!(host, Host::Ip(_)))
}

/// `HOST:PORT` of the SSL listener, an IPv6 address in brackets.
fn host_port(host: &Host) -> String {
    match host {
        Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{SSL_PORT}"),
        other => format!("{other}:{SSL_PORT}"),
    }
}

/// Writes the files into `dir` (created if missing) and returns `dir` made
/// absolute, for settings that work from any folder. Refuses before writing
/// anything when one of the files exists, unless `force`.
fn write_files(dir: &Path, certificates: &DevCertificates, force: bool) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(CliError::io(format!("cannot create {}", dir.display())))?;
    let dir =
        fs::canonicalize(dir).map_err(CliError::io(format!("cannot find {}", dir.display())))?;
    let files = certificates.files();
    // A dangling symbolic link counts as existing: writing would follow it.
    let existing: Vec<&str> = files
        .iter()
        .map(|(name, _, _)| *name)
        .filter(|name| dir.join(name).symlink_metadata().is_ok())
        .collect();
    if !existing.is_empty() && !force {
        return Err(CliError::Failed(format!(
            "{} already has {}; pass --force to overwrite them (brokers and clients that \
             trust the old ca.crt would no longer accept the new certificates)",
            dir.display(),
            existing.join(", ")
        )));
    }
    for (name, contents, secret) in &files {
        let path = dir.join(name);
        write_file(&path, contents, *secret)
            .map_err(CliError::io(format!("cannot write {}", path.display())))?;
    }
    Ok(dir)
}

/// Mode of a file holding a private key: readable by its owner alone.
#[cfg(unix)]
const SECRET_MODE: u32 = 0o600;

/// Writes `contents` to `path`, replacing what is there; a `secret` file
/// gets mode 0600, set before the key is written, also when the file
/// existed with a wider mode.
fn write_file(path: &Path, contents: &str, secret: bool) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(SECRET_MODE);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(SECRET_MODE))?;
    }
    file.write_all(contents.as_bytes())?;
    file.flush()
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;
    use x509_parser::pem::parse_x509_pem;

    use super::*;

    fn default_hosts() -> Vec<Host> {
        HOSTS_DEFAULT
            .iter()
            .map(|host| parse_host(host).expect("a default host"))
            .collect()
    }

    fn make(hosts: &[Host], client: &str) -> DevCertificates {
        generate(hosts, client, 30, OffsetDateTime::now_utc()).expect("certificates")
    }

    /// Checks `pem` as an X.509 certificate with `check`.
    fn with_cert(pem: &str, check: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>)) {
        let (_, pem) = parse_x509_pem(pem.as_bytes()).expect("PEM");
        let cert = pem.parse_x509().expect("X.509");
        check(&cert);
    }

    #[test]
    fn hosts_are_told_apart_as_dns_names_and_ip_addresses() {
        assert_eq!(
            parse_host("localhost"),
            Ok(Host::Dns("localhost".to_owned()))
        );
        assert_eq!(
            parse_host("*.kafka.test"),
            Ok(Host::Dns("*.kafka.test".to_owned()))
        );
        assert_eq!(
            parse_host("127.0.0.1"),
            Ok(Host::Ip("127.0.0.1".parse().expect("ip")))
        );
        assert_eq!(parse_host("::1"), Ok(Host::Ip("::1".parse().expect("ip"))));
        for bad in [
            "",
            "a b",
            "-a.test",
            "a-.test",
            "a..test",
            "zoë.test",
            "a.*",
            "a_b",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_host(&format!("{}.test", "a".repeat(64))).is_err());
    }

    #[test]
    fn common_names_have_1_to_64_characters() {
        assert_eq!(parse_common_name("alice"), Ok("alice".to_owned()));
        assert!(parse_common_name("").is_err());
        assert!(parse_common_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn the_ca_signs_certificates_and_nothing_else() {
        let certs = make(&default_hosts(), "client");
        with_cert(&certs.ca_cert, |ca| {
            assert!(ca.is_ca());
            let constraints = ca.basic_constraints().expect("one").expect("present");
            assert_eq!(constraints.value.path_len_constraint, Some(0));
            let usage = ca.key_usage().expect("one").expect("present");
            assert!(usage.value.key_cert_sign());
            assert!(
                ca.subject()
                    .to_string()
                    .starts_with("CN=Weir development CA ")
            );
            assert_eq!(ca.subject(), ca.issuer());
        });
    }

    #[test]
    fn the_broker_certificate_names_every_host_and_serves_and_connects() {
        let hosts = vec![
            Host::Dns("kafka.test".to_owned()),
            Host::Ip("10.1.2.3".parse().expect("ip")),
            Host::Ip("::1".parse().expect("ip")),
        ];
        let certs = make(&hosts, "client");
        with_cert(&certs.broker_cert, |broker| {
            assert!(!broker.is_ca());
            assert_eq!(broker.subject().to_string(), "CN=kafka.test");
            let names = &broker
                .subject_alternative_name()
                .expect("one")
                .expect("present")
                .value
                .general_names;
            assert_eq!(
                names,
                &vec![
                    GeneralName::DNSName("kafka.test"),
                    GeneralName::IPAddress(&[10, 1, 2, 3]),
                    GeneralName::IPAddress(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                ]
            );
            let usage = broker.extended_key_usage().expect("one").expect("present");
            assert!(usage.value.server_auth && usage.value.client_auth);
        });
    }

    #[test]
    fn the_client_certificate_is_for_clients_and_named_by_its_cn() {
        let certs = make(&default_hosts(), "alice");
        with_cert(&certs.client_cert, |client| {
            assert_eq!(client.subject().to_string(), "CN=alice");
            let usage = client.extended_key_usage().expect("one").expect("present");
            assert!(usage.value.client_auth && !usage.value.server_auth);
            assert!(client.subject_alternative_name().expect("one").is_none());
        });
        assert_eq!(
            client_principal(&certs.client_der).expect("a principal"),
            "User:CN=alice"
        );
    }

    #[test]
    fn certificates_are_valid_for_the_days_asked_from_a_little_before_now() {
        let now = OffsetDateTime::now_utc();
        let certs = generate(&default_hosts(), "client", 7, now).expect("certificates");
        for pem in [&certs.ca_cert, &certs.broker_cert, &certs.client_cert] {
            with_cert(pem, |cert| {
                let validity = cert.validity();
                let from = validity.not_before.timestamp();
                let to = validity.not_after.timestamp();
                assert_eq!(
                    from,
                    (now - Duration::minutes(BACKDATE_MINUTES)).unix_timestamp()
                );
                assert_eq!(to, (now + Duration::days(7)).unix_timestamp());
            });
        }
    }

    #[test]
    fn existing_files_are_kept_unless_forced_and_keys_are_private() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let target = dir.path().join("certs");
        let first = make(&default_hosts(), "client");
        write_files(&target, &first, false).expect("first write");

        let second = make(&default_hosts(), "client");
        let refused = write_files(&target, &second, false).expect_err("refused");
        assert!(refused.to_string().contains("--force"), "{refused}");
        let kept = fs::read_to_string(target.join(CA_CERT)).expect("ca.crt");
        assert_eq!(kept, first.ca_cert);

        // A key file someone opened up is closed again by --force.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(target.join(CA_KEY), fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        write_files(&target, &second, true).expect("forced write");
        assert_eq!(
            fs::read_to_string(target.join(CA_CERT)).expect("ca.crt"),
            second.ca_cert
        );
        let keystore = fs::read_to_string(target.join(BROKER_PEM)).expect("broker.pem");
        assert_eq!(
            keystore,
            format!(
                "{}{}{}",
                second.broker_key, second.broker_cert, second.ca_cert
            )
        );
        #[cfg(unix)]
        for (name, _, secret) in second.files() {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(target.join(name))
                .expect("metadata")
                .permissions()
                .mode();
            if secret {
                assert_eq!(mode & 0o777, 0o600, "{name}");
            }
        }
    }

    #[test]
    fn the_printed_settings_name_the_files_and_an_ssl_listener() {
        let dir = Path::new("/certs");
        assert_eq!(
            broker_settings(dir, &default_hosts()),
            vec![
                "listeners=SSL://127.0.0.1:9093",
                "ssl.keystore.location=/certs/broker.pem",
                "ssl.truststore.location=/certs/ca.crt",
                "ssl.client.auth=required",
            ]
        );
        let named = [Host::Dns("kafka.test".to_owned())];
        assert_eq!(
            broker_settings(dir, &named).first().map(String::as_str),
            Some("listeners=SSL://0.0.0.0:9093")
        );
        assert_eq!(
            client_settings(dir, &named).first().map(String::as_str),
            Some("bootstrap.servers=kafka.test:9093")
        );
        let v6 = [Host::Ip("::1".parse().expect("ip"))];
        assert_eq!(
            broker_settings(dir, &v6).first().map(String::as_str),
            Some("listeners=SSL://[::1]:9093")
        );
        assert_eq!(
            client_settings(dir, &default_hosts()),
            vec![
                "bootstrap.servers=127.0.0.1:9093",
                "security.protocol=ssl",
                "ssl.ca.location=/certs/ca.crt",
                "ssl.certificate.location=/certs/client.crt",
                "ssl.key.location=/certs/client.key",
            ]
        );
    }
}
