//! weir-auth: who a client is and what it may do.
//!
//! It holds principals, the mapping of certificate names to them, and the
//! SASL mechanisms: [`KafkaPrincipal`] (`User:alice`, `User:ANONYMOUS`);
//! the subject name of a client certificate as Kafka reads it
//! ([`subject_name`], in [`x509`]) and Kafka's `ssl.principal.mapping.rules`
//! ([`SslPrincipalMapper`], in [`principal`]), so that an SSL listener with
//! client certificates names each client as a Kafka broker with the same
//! rules would; and the server side of `PLAIN`, `SCRAM-SHA-256` and
//! `SCRAM-SHA-512` ([`SaslServer`], in [`sasl`]), with the SCRAM
//! credentials they check passwords against ([`ScramCredential`]), and
//! `OAUTHBEARER`'s check of a JWT against a JWKS ([`OAuthBearerServer`],
//! in [`oauth`]). It also
//! holds Kafka's ACL model and the authorizer that decides with it
//! ([`AclBinding`], [`AclBindingFilter`] and [`Authorizer`], in [`acl`]).
//!
//! It knows nothing of sockets, TLS sessions or where users are kept: the
//! server hands it a certificate's bytes or a client's SASL messages, with
//! a way to look credentials up ([`CredentialLookup`]) or the signing keys
//! it loaded ([`Jwks`]) and the time, and gets a principal back.

pub mod acl;
pub mod oauth;
pub mod principal;
pub mod sasl;
pub mod x509;

pub use acl::{
    ACL_HOST_BYTES_MAX, ACL_PRINCIPAL_BYTES_MAX, ACL_RESOURCE_NAME_BYTES_MAX, AclBinding,
    AclBindingFilter, AclError, AclOperation, AclParseError, AclPermissionType, Authorization,
    Authorizer, AuthorizerConfig, CLUSTER_RESOURCE_NAME, Decision, DecisionReason, PatternType,
    ResourceType, WILDCARD_HOST, WILDCARD_PRINCIPAL, WILDCARD_RESOURCE_NAME, parse_principal,
};
pub use oauth::{
    Jwks, JwksError, OAuthBearerServer, OAuthError, OAuthStep, TokenError, TokenRules,
    ValidatedToken,
};
pub use principal::{
    ANONYMOUS_NAME, KafkaPrincipal, MappingRulesError, NoMatchingRule, SslPrincipalMapper,
    USER_TYPE,
};
pub use sasl::{
    CredentialError, CredentialLookup, Mechanism, SASL_MESSAGE_BYTES_MAX, SASL_USER_NAME_BYTES_MAX,
    SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN, SCRAM_NONCE_BYTES_MAX, SCRAM_SALT_BYTES_MAX,
    SaslError, SaslServer, ScramCredential, ScramMechanism, Step,
};
pub use x509::{CertificateError, subject_name};
