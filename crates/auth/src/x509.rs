//! The subject name of an X.509 certificate, as the string Kafka's
//! principal mapping reads.
//!
//! Kafka names an SSL client by its certificate's subject as Java's
//! `X500Principal.getName()` prints it (RFC 2253), and
//! `ssl.principal.mapping.rules` are written against that string. So
//! [`subject_name`] prints it the same way, Java's quirks included:
//!
//! - RDNs from the last of the ASN.1 sequence to the first, joined by `,`
//!   (a typical certificate gives `CN=client,OU=eng,O=acme,C=US`); the
//!   attributes of a multi-valued RDN in their encoded order, joined by `+`.
//! - Attribute names by RFC 2253's keywords (`CN`, `L`, `ST`, `O`, `OU`,
//!   `C`, `STREET`, `DC`, `UID`), any other attribute by its dotted OID
//!   (`1.2.840.113549.1.9.1` for an e-mail address, not `EMAILADDRESS`).
//! - A value is `#` and the lowercase hex of its whole DER encoding when its
//!   attribute has no keyword, or when it is not one of the string types
//!   Java prints as text (PrintableString, TeletexString, IA5String,
//!   GeneralString, BMPString, UTF8String; a UniversalString,
//!   VisibleString or NumericString is hex).
//! - Otherwise the value's bytes are read as UTF-8, whatever the string
//!   type: as Java does, a BMPString's UTF-16 bytes too (`ab` prints as
//!   `\00a\00b`), and bytes that are not UTF-8 become U+FFFD.
//! - Escaped with a backslash: `,` `=` `+` `<` `>` `#` `;` `"` `\` anywhere
//!   (Java escapes `=` and every `#`, more than RFC 2253 asks), spaces and
//!   carriage returns at the start or the end; a NUL is `\00`. Other
//!   characters, non-ASCII ones included, are as they are.

use x509_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Why a certificate's subject could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The bytes are not a DER-encoded X.509 certificate.
    #[error("not a DER-encoded X.509 certificate")]
    Parse(#[source] x509_parser::error::X509Error),
    /// Bytes follow the certificate; a TLS peer sends each certificate
    /// alone, so they are refused rather than ignored.
    #[error("{trailing} bytes follow the certificate")]
    TrailingBytes {
        /// How many bytes follow it.
        trailing: usize,
    },
}

/// The subject distinguished name of the DER certificate `cert_der`, as
/// Java's `X500Principal.getName()` prints it (see the module docs): the
/// string `ssl.principal.mapping.rules` apply to.
pub fn subject_name(cert_der: &[u8]) -> Result<String, CertificateError> {
    let (rest, certificate) = X509Certificate::from_der(cert_der).map_err(|err| {
        CertificateError::Parse(match err {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
            x509_parser::nom::Err::Incomplete(_) => {
                x509_parser::error::X509Error::InvalidCertificate
            }
        })
    })?;
    if !rest.is_empty() {
        return Err(CertificateError::TrailingBytes {
            trailing: rest.len(),
        });
    }
    Ok(rfc2253_name(certificate.subject()))
}

/// A name as Java's `X500Name.getRFC2253Name()` prints it.
fn rfc2253_name(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(rfc2253_attribute)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    // RFC 2253 prints the last RDN of the sequence first.
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// The RFC 2253 keywords Java prints (`AVAKeyword`'s RFC 2253-compliant
/// ones), by dotted OID.
const RFC2253_KEYWORDS: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// One attribute as Java's `AVA.toRFC2253String()` prints it.
fn rfc2253_attribute(attribute: &AttributeTypeAndValue<'_>) -> String {
    let oid = attribute.attr_type().to_id_string();
    let keyword = RFC2253_KEYWORDS
        .iter()
        .find(|(dotted, _)| *dotted == oid)
        .map(|(_, keyword)| *keyword);
    let value = attribute.attr_value();
    match keyword {
        Some(keyword) if is_java_text(value) => {
            format!(
                "{keyword}={}",
                escape_value(&String::from_utf8_lossy(value.data))
            )
        }
        Some(keyword) => format!("{keyword}=#{}", hex(&der_encoding(value))),
        None => format!("{oid}=#{}", hex(&der_encoding(value))),
    }
}

/// Whether Java prints a value of this type as text (`AVA.isDerString`,
/// not canonical): the universal, primitive string types it lists.
fn is_java_text(value: &Any<'_>) -> bool {
    value.class() == Class::Universal
        && !value.header.is_constructed()
        && [
            Tag::PrintableString,
            Tag::T61String,
            Tag::Ia5String,
            Tag::GeneralString,
            Tag::BmpString,
            Tag::Utf8String,
        ]
        .contains(&value.tag())
}

/// The characters Java escapes with a backslash anywhere in a value.
const ESCAPED: &str = ",=+<>#;\"\\";

/// A text value, escaped as Java's `AVA.toRFC2253String()` escapes it.
fn escape_value(value: &str) -> String {
    let mut escaped: Vec<char> = Vec::with_capacity(value.len());
    for c in value.chars() {
        if ESCAPED.contains(c) {
            escaped.push('\\');
            escaped.push(c);
        } else if c == '\0' {
            escaped.extend(['\\', '0', '0']);
        } else {
            escaped.push(c);
        }
    }
    // Leading and trailing spaces (and carriage returns) get a backslash
    // each, found after the escapes above, as Java finds them.
    let blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = escaped.iter().take_while(|c| blank(c)).count();
    let trail = escaped.iter().rev().take_while(|c| blank(c)).count();
    let mut out = String::with_capacity(escaped.len() + lead + trail);
    for (i, c) in escaped.iter().enumerate() {
        // An all-blank value counts as leading only (`lead` covers it).
        if i < lead || (lead < escaped.len() && i >= escaped.len() - trail) {
            out.push('\\');
        }
        out.push(*c);
    }
    out
}

/// The DER encoding of a value (identifier, definite length, contents), as
/// Java's `DerValue.toByteArray()` re-encodes it for the `#` form.
fn der_encoding(value: &Any<'_>) -> Vec<u8> {
    let class_bits: u8 = match value.class() {
        Class::Universal => 0x00,
        Class::Application => 0x40,
        Class::ContextSpecific => 0x80,
        Class::Private => 0xc0,
    };
    let constructed_bit: u8 = if value.header.is_constructed() {
        0x20
    } else {
        0
    };
    let mut der = Vec::with_capacity(value.data.len() + 8);
    let Tag(number) = value.tag();
    match u8::try_from(number) {
        Ok(low) if low < 0x1f => der.push(class_bits | constructed_bit | low),
        _ => {
            // The high tag number form: base 128, most significant first.
            der.push(class_bits | constructed_bit | 0x1f);
            let mut groups = Vec::new();
            let mut rest = number;
            loop {
                groups.push((rest & 0x7f) as u8);
                rest >>= 7;
                if rest == 0 {
                    break;
                }
            }
            let last = groups.len() - 1;
            der.extend(
                groups.iter().rev().enumerate().map(
                    |(i, group)| {
                        if i < last { group | 0x80 } else { *group }
                    },
                ),
            );
        }
    }
    let length = value.data.len();
    match u8::try_from(length) {
        Ok(short) if short < 0x80 => der.push(short),
        _ => {
            let bytes = length.to_be_bytes();
            let significant: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
            // At most 8 bytes of length on a 64-bit usize, so this fits.
            der.push(0x80 | significant.len() as u8);
            der.extend(significant);
        }
    }
    der.extend_from_slice(value.data);
    der
}

/// Lowercase hex, as Java's `Character.forDigit` writes it.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use rcgen::string::{BmpString, PrintableString, UniversalString};
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};

    use super::*;

    /// A self-signed certificate with `subject`, in DER.
    fn certificate(subject: DistinguishedName) -> Vec<u8> {
        let key = KeyPair::generate().expect("a P-256 key");
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .to_vec()
    }

    fn subject(entries: &[(DnType, DnValue)]) -> String {
        let mut dn = DistinguishedName::new();
        for (ty, value) in entries {
            dn.push(ty.clone(), value.clone());
        }
        subject_name(&certificate(dn)).expect("a subject")
    }

    fn utf8(text: &str) -> DnValue {
        DnValue::Utf8String(text.to_owned())
    }

    #[test]
    fn rdns_print_last_first_with_rfc2253_keywords() {
        // Encoded C, O, OU, CN: printed CN first.
        let name = subject(&[
            (
                DnType::CountryName,
                DnValue::PrintableString(PrintableString::try_from("US").expect("printable")),
            ),
            (DnType::StateOrProvinceName, utf8("CA")),
            (DnType::LocalityName, utf8("Palo Alto")),
            (DnType::OrganizationName, utf8("acme")),
            (DnType::OrganizationalUnitName, utf8("eng")),
            (DnType::CommonName, utf8("client")),
        ]);
        assert_eq!(name, "CN=client,OU=eng,O=acme,L=Palo Alto,ST=CA,C=US");
    }

    #[test]
    fn street_dc_and_uid_have_keywords() {
        // rcgen keeps one value per attribute type, so one DC here.
        let name = subject(&[
            (
                DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
                utf8("example"),
            ),
            (DnType::CustomDnType(vec![2, 5, 4, 9]), utf8("1 Main St")),
            (
                DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
                utf8("alice"),
            ),
        ]);
        assert_eq!(name, "UID=alice,STREET=1 Main St,DC=example");
    }

    #[test]
    fn attributes_without_a_keyword_print_as_oid_and_hex() {
        // An e-mail address (IA5String): Java prints neither EMAILADDRESS
        // nor the text.
        let name = subject(&[
            (DnType::CommonName, utf8("client")),
            (
                DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
                DnValue::Ia5String("a@b.c".try_into().expect("ia5")),
            ),
        ]);
        assert_eq!(name, "1.2.840.113549.1.9.1=#16056140622e63,CN=client");
    }

    #[test]
    fn values_of_types_java_does_not_print_as_text_are_hex() {
        let name = subject(&[(
            DnType::CommonName,
            DnValue::UniversalString(UniversalString::try_from("ab").expect("universal")),
        )]);
        assert_eq!(name, "CN=#1c080000006100000062");
    }

    #[test]
    fn bmp_strings_are_read_as_utf8_as_java_reads_them() {
        let name = subject(&[(
            DnType::CommonName,
            DnValue::BmpString(BmpString::try_from("ab").expect("bmp")),
        )]);
        assert_eq!(name, r"CN=\00a\00b");
    }

    #[test]
    fn special_characters_are_escaped_as_java_escapes_them() {
        assert_eq!(
            subject(&[(DnType::CommonName, utf8("a,b+c"))]),
            r"CN=a\,b\+c"
        );
        assert_eq!(
            subject(&[(DnType::CommonName, utf8(r#"q"\<>;"#))]),
            r#"CN=q\"\\\<\>\;"#
        );
        // Java escapes `=` and every `#`, not only a leading one.
        assert_eq!(
            subject(&[(DnType::CommonName, utf8("#a=b#"))]),
            r"CN=\#a\=b\#"
        );
        // Leading and trailing spaces, each of them.
        assert_eq!(
            subject(&[(DnType::CommonName, utf8("  a b "))]),
            r"CN=\ \ a b\ "
        );
        assert_eq!(subject(&[(DnType::CommonName, utf8(" "))]), r"CN=\ ");
        // Non-ASCII text is kept as it is.
        assert_eq!(
            subject(&[(DnType::CommonName, utf8("Zoë_1*"))]),
            "CN=Zoë_1*"
        );
    }

    #[test]
    fn an_empty_subject_is_an_empty_name() {
        assert_eq!(subject(&[]), "");
    }

    /// Multi-valued RDNs cannot be made with rcgen, so this names one by
    /// hand: SEQUENCE { SET { O=acme }, SET { CN=a, UID=b } }.
    #[test]
    fn multi_valued_rdns_join_with_plus_in_encoded_order() {
        let o = [
            0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x04, b'a', b'c', b'm', b'e',
        ];
        let cn = [0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, b'a'];
        let uid = [
            0x30, 0x0f, 0x06, 0x0a, 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01,
            0x0c, 0x01, b'b',
        ];
        let mut first = vec![0x31, o.len() as u8];
        first.extend(o);
        let mut second = vec![0x31, (cn.len() + uid.len()) as u8];
        second.extend(cn);
        second.extend(uid);
        let mut name = vec![0x30, (first.len() + second.len()) as u8];
        name.extend(first);
        name.extend(second);
        let (rest, parsed) = X509Name::from_der(&name).expect("a name");
        assert!(rest.is_empty());
        assert_eq!(rfc2253_name(&parsed), "CN=a+UID=b,O=acme");
    }

    #[test]
    fn what_is_not_a_certificate_is_refused() {
        assert!(matches!(
            subject_name(b"nope"),
            Err(CertificateError::Parse(_))
        ));
        let mut der = certificate(DistinguishedName::new());
        der.push(0);
        assert!(matches!(
            subject_name(&der),
            Err(CertificateError::TrailingBytes { trailing: 1 })
        ));
    }

    #[test]
    fn long_values_get_a_long_form_length_in_hex() {
        let value = "x".repeat(200);
        let name = subject(&[(DnType::CustomDnType(vec![1, 2, 3]), utf8(&value))]);
        assert_eq!(name, format!("1.2.3=#0c81c8{}", "78".repeat(200)));
    }
}
