//! Kafka principals, and the mapping of a client certificate's subject name
//! to one: Kafka's `ssl.principal.mapping.rules` (KIP-371).
//!
//! A principal is what ACLs and quotas name (`User:alice`). On an SSL
//! listener with a client certificate, Kafka takes the certificate's subject
//! distinguished name as Java prints it (RFC 2253, see [`crate::x509`]),
//! runs it through the mapping rules, and the result is the name of a
//! `User` principal. [`SslPrincipalMapper`] parses and applies those rules
//! as Apache Kafka's own `SslPrincipalMapper` does, so that a rules string
//! written for a Kafka broker gives the same principals here.
//!
//! # The rules
//!
//! A comma-separated list (spaces and line breaks around the commas allowed)
//! of:
//!
//! - `RULE:pattern/replacement/`, optionally followed by `L` or `U`, which
//!   lower- or upper-cases the result. Inside the pattern and the
//!   replacement a backslash escapes the next character, so `\/` is a
//!   slash that does not end the part.
//! - `DEFAULT`: the distinguished name unchanged.
//!
//! Rules are tried in order. A rule applies when its pattern matches the
//! whole distinguished name; its result is then the name with every match
//! of the pattern replaced by the replacement (`$1` is the first group,
//! `${name}` a named one, `\$` a dollar sign), as Java's
//! `String.replaceAll`. A reference to a group the pattern does not have is
//! kept as literal text, as Kafka keeps it. When no rule applies, the
//! connection is refused ([`NoMatchingRule`]); empty rules (`,,`) are
//! ignored, and an empty rules string applies to nothing.
//!
//! # Differences from Kafka
//!
//! Kafka's patterns are Java regular expressions; here they run on the
//! `regex` crate. Everything rules are written with means the same in both:
//! character classes, groups (named too), alternation, anchors, greedy and
//! lazy quantifiers, `\d \w \s` and their negations (kept ASCII, as Java has
//! them), and `\<` `\>` (kept literal, as Java has them). A construct only
//! Java has (look-around, back-references, possessive quantifiers,
//! `\Q...\E`) makes [`SslPrincipalMapper::parse`] refuse the rule
//! ([`MappingRulesError::Pattern`]).
//!
//! A replacement that Java would fail on (`$` at its end, `$x`, a group
//! number past the pattern's when the pattern has no groups at all, an
//! unknown `${name}`, a trailing `\`) makes Kafka fail, at connection time,
//! every client the rule matches; here [`SslPrincipalMapper::parse`] refuses
//! it at once ([`MappingRulesError::Replacement`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// The principal type of every user, authenticated or not.
pub const USER_TYPE: &str = "User";

/// The name of the principal of a client that did not authenticate.
pub const ANONYMOUS_NAME: &str = "ANONYMOUS";

/// Who a client is, as Kafka's ACLs and quotas name it: a type and a name,
/// printed `User:alice`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KafkaPrincipal {
    /// The principal's type; [`USER_TYPE`] for every client Kafka's own
    /// authenticators make.
    pub principal_type: String,
    /// The principal's name: a SASL user name, or the result of the
    /// certificate mapping rules.
    pub name: String,
}

impl KafkaPrincipal {
    /// The `User` principal called `name`.
    pub fn user(name: impl Into<String>) -> Self {
        KafkaPrincipal {
            principal_type: USER_TYPE.to_owned(),
            name: name.into(),
        }
    }

    /// `User:ANONYMOUS`: Kafka's principal for a client that did not
    /// authenticate, on a PLAINTEXT listener or an SSL one without a client
    /// certificate.
    pub fn anonymous() -> Self {
        Self::user(ANONYMOUS_NAME)
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

/// Why a rules string was refused. Each variant names the rule as written.
#[derive(Debug, thiserror::Error)]
pub enum MappingRulesError {
    /// The rule is neither `DEFAULT` nor `RULE:pattern/replacement/[LU]`:
    /// text follows what could be read as one (`DEFAULT/L`, `RULE:a/b/LU`,
    /// `rule:...`, a `RULE:` with one slash too few).
    #[error("invalid rule `{rule}`, unmatched substring: `{unmatched}`")]
    Invalid {
        /// The rule as split from the rules string.
        rule: String,
        /// The text after the longest prefix that reads as a rule.
        unmatched: String,
    },
    /// The rule's pattern is not a regular expression this crate can run.
    #[error("invalid rule `{rule}`: its pattern does not compile")]
    Pattern {
        /// The rule as split from the rules string.
        rule: String,
        /// The regex crate's error.
        #[source]
        source: regex::Error,
    },
    /// The rule's pattern uses a construct of Java's regular expressions
    /// that the regex crate would read otherwise.
    #[error("invalid rule `{rule}`: {construct}")]
    JavaOnly {
        /// The rule as split from the rules string.
        rule: String,
        /// What in the pattern is Java's alone.
        construct: &'static str,
    },
    /// The rule's replacement is one Java's `String.replaceAll` would fail
    /// on (which Kafka finds only when a client's name matches).
    #[error("invalid rule `{rule}`: bad replacement: {reason}")]
    Replacement {
        /// The rule as split from the rules string.
        rule: String,
        /// What is wrong with the replacement.
        reason: String,
    },
}

/// No mapping rule applies to a client certificate's subject name; Kafka
/// refuses the connection.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("no rules apply to {distinguished_name}, rules {rules}")]
pub struct NoMatchingRule {
    /// The subject name no rule matched.
    pub distinguished_name: String,
    /// The rules, as Kafka prints them (`[RULE:^CN=(.*)$/$1, DEFAULT]`).
    pub rules: String,
}

/// Kafka's `ssl.principal.mapping.rules`, parsed: maps a certificate's
/// subject name (RFC 2253, as [`crate::x509::subject_name`] gives it) to a
/// principal name. [`Default`] is the rules string `DEFAULT`, Kafka's
/// default: the distinguished name itself.
#[derive(Debug, Clone)]
pub struct SslPrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for SslPrincipalMapper {
    fn default() -> Self {
        SslPrincipalMapper {
            rules: vec![Rule::Default],
        }
    }
}

impl SslPrincipalMapper {
    /// Parses a rules string as Kafka's `SslPrincipalMapper.fromRules`
    /// does, refusing what Kafka refuses, and also each pattern and
    /// replacement that could never be applied (see the module docs).
    pub fn parse(rules: &str) -> Result<Self, MappingRulesError> {
        let rules = split_rules(rules)
            .into_iter()
            .filter_map(|rule| parse_rule(rule).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SslPrincipalMapper { rules })
    }

    /// The principal name for a certificate whose subject is
    /// `distinguished_name`: the result of the first rule that applies.
    pub fn principal_name(&self, distinguished_name: &str) -> Result<String, NoMatchingRule> {
        self.rules
            .iter()
            .find_map(|rule| rule.apply(distinguished_name))
            .ok_or_else(|| NoMatchingRule {
                distinguished_name: distinguished_name.to_owned(),
                rules: self.to_string(),
            })
    }

    /// The `User` principal for a certificate whose subject is
    /// `distinguished_name`, as Kafka's default principal builder makes it.
    pub fn principal(&self, distinguished_name: &str) -> Result<KafkaPrincipal, NoMatchingRule> {
        self.principal_name(distinguished_name)
            .map(KafkaPrincipal::user)
    }
}

/// The rules as Kafka prints them: `[RULE:pattern/replacement/L, DEFAULT]`
/// (a rule without a case flag loses its last slash, as in Kafka).
impl fmt::Display for SslPrincipalMapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{rule}")?;
        }
        f.write_str("]")
    }
}

/// What Java's `\s` matches (ASCII only), for the rule grammar.
const JAVA_SPACE: &str = r"[ \t\n\x0B\f\r]";
/// What Java's `.` matches without DOTALL: anything but a line terminator.
const JAVA_DOT: &str = r"[^\n\r\x{85}\x{2028}\x{2029}]";

/// One rule, as Kafka's grammar reads it: `DEFAULT`, or `RULE:` then a
/// pattern and a replacement, each of escaped characters and anything but
/// `\` and `/`, each closed by `/`, then an optional case flag (and
/// anything, taken as little as possible, which the parser refuses), or
/// else nothing (an empty rule). Java's regex syntax, with `\s` and `.`
/// spelled out as Java means them.
fn rule_grammar() -> String {
    let part = format!(r"(?:\\{JAVA_DOT}|[^\\/])*");
    format!(
        r"(?P<default>DEFAULT)|RULE:(?P<pattern>{part})/(?P<replacement>{part})/(?P<flag>[LU]?){JAVA_DOT}*?|(?P<empty>{JAVA_DOT}*?)"
    )
}

/// Compiles one of the grammar's own patterns. They are constants that a
/// unit test compiles, so a failure is a bug in this file, not an input.
#[allow(clippy::expect_used)]
fn grammar(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the rule grammar compiles")
}

/// Kafka's splitter: a rule, then optional spaces, then a comma (and
/// spaces) or the end.
static RULE_SPLITTER: LazyLock<Regex> = LazyLock::new(|| {
    grammar(&format!(
        r"{JAVA_SPACE}*(?P<rule>{}){JAVA_SPACE}*(?:,{JAVA_SPACE}*|\z)",
        rule_grammar()
    ))
});

/// Kafka's parser of one split rule, anchored at its start as Java's
/// `lookingAt` is.
static RULE_PARSER: LazyLock<Regex> =
    LazyLock::new(|| grammar(&format!(r"\A(?:{})", rule_grammar())));

/// Splits a rules string into rules as Kafka does: trims it (every
/// character up to U+0020, as Java's `String.trim`), then finds the
/// splitter again and again, each search starting where the last match
/// ended, as Java's `Matcher.find`.
///
/// Java's `$` (here `\z`) would also match before a final U+0085, U+2028
/// or U+2029; a trimmed rules string ends in one only if written so.
fn split_rules(rules: &str) -> Vec<&str> {
    let trimmed = rules.trim_matches(|c: char| c <= ' ');
    java_find_iter(&RULE_SPLITTER, trimmed)
        .filter_map(|captures| captures.name("rule").map(|rule| rule.as_str()))
        .collect()
}

/// Parses one split rule; `None` for an empty one, which Kafka ignores.
fn parse_rule(rule: &str) -> Result<Option<Rule>, MappingRulesError> {
    let captures = RULE_PARSER.captures(rule);
    let end = captures
        .as_ref()
        .and_then(|c| c.get(0))
        .map_or(0, |m| m.end());
    if end != rule.len() {
        return Err(MappingRulesError::Invalid {
            rule: rule.to_owned(),
            unmatched: rule.get(end..).unwrap_or_default().to_owned(),
        });
    }
    let Some(captures) = captures else {
        return Ok(None);
    };
    if captures.name("default").is_some() {
        return Ok(Some(Rule::Default));
    }
    let (Some(pattern), Some(replacement)) =
        (captures.name("pattern"), captures.name("replacement"))
    else {
        return Ok(None);
    };
    let case = match captures.name("flag").map(|m| m.as_str()) {
        Some("L") => Case::Lower,
        Some("U") => Case::Upper,
        _ => Case::Keep,
    };
    MappedRule::new(rule, pattern.as_str(), replacement.as_str(), case)
        .map(|mapped| Some(Rule::Mapped(Box::new(mapped))))
}

/// The matches of `regex` in `text`, found as Java's `Matcher.find` finds
/// them again and again: each search starts where the last match ended, or
/// one character further after an empty match. (An empty match right after
/// a non-empty one counts, as in Java.)
fn java_find_iter<'t>(regex: &Regex, text: &'t str) -> impl Iterator<Item = Captures<'t>> {
    let mut from = Some(0);
    std::iter::from_fn(move || {
        let at = from?;
        let captures = regex.captures_at(text, at)?;
        let whole = captures.get(0)?;
        from = if whole.is_empty() {
            // One character on; past the end, no search is left.
            text.get(whole.end()..)
                .and_then(|rest| rest.chars().next())
                .map(|next| whole.end() + next.len_utf8())
        } else {
            Some(whole.end())
        };
        Some(captures)
    })
}

/// One parsed rule.
#[derive(Debug, Clone)]
enum Rule {
    /// `DEFAULT`: the distinguished name itself.
    Default,
    /// `RULE:pattern/replacement/[LU]`.
    Mapped(Box<MappedRule>),
}

impl Rule {
    /// The principal name this rule gives `distinguished_name`, or `None`
    /// when it does not apply.
    fn apply(&self, distinguished_name: &str) -> Option<String> {
        match self {
            Rule::Default => Some(distinguished_name.to_owned()),
            Rule::Mapped(rule) => rule.apply(distinguished_name),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Default => f.write_str("DEFAULT"),
            Rule::Mapped(rule) => {
                write!(f, "RULE:{}/{}", rule.pattern_text, rule.replacement_text)?;
                match rule.case {
                    Case::Lower => f.write_str("/L"),
                    Case::Upper => f.write_str("/U"),
                    Case::Keep => Ok(()),
                }
            }
        }
    }
}

/// What a rule's `L` or `U` flag does to its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// A `RULE:`, compiled.
#[derive(Debug, Clone)]
struct MappedRule {
    /// The pattern as written (for printing).
    pattern_text: String,
    /// The replacement as written (for printing).
    replacement_text: String,
    /// The pattern, anchored at both ends: whether the rule applies.
    whole: Regex,
    /// The pattern as written: what is replaced, wherever it matches.
    pattern: Regex,
    /// The replacement, read as Java reads it.
    replacement: Vec<Piece>,
    case: Case,
}

impl MappedRule {
    fn new(
        rule: &str,
        pattern_text: &str,
        replacement_text: &str,
        case: Case,
    ) -> Result<Self, MappingRulesError> {
        let translated = java_pattern_to_rust(pattern_text).map_err(|construct| {
            MappingRulesError::JavaOnly {
                rule: rule.to_owned(),
                construct,
            }
        })?;
        let compile = |pattern: &str| {
            Regex::new(pattern).map_err(|source| MappingRulesError::Pattern {
                rule: rule.to_owned(),
                source,
            })
        };
        let pattern = compile(&translated)?;
        let whole = compile(&format!(r"\A(?:{translated})\z"))?;
        // Group 0, the whole match, is not a capturing group to Java.
        let groups = pattern.captures_len().saturating_sub(1);
        let names: HashMap<&str, usize> = pattern
            .capture_names()
            .enumerate()
            .filter_map(|(index, name)| name.map(|name| (name, index)))
            .collect();
        let escaped =
            escape_literal_back_references(replacement_text, groups).map_err(|reason| {
                MappingRulesError::Replacement {
                    rule: rule.to_owned(),
                    reason,
                }
            })?;
        let replacement = parse_replacement(&escaped, groups, &names).map_err(|reason| {
            MappingRulesError::Replacement {
                rule: rule.to_owned(),
                reason,
            }
        })?;
        Ok(MappedRule {
            pattern_text: pattern_text.to_owned(),
            replacement_text: replacement_text.to_owned(),
            whole,
            pattern,
            replacement,
            case,
        })
    }

    /// Kafka's `Rule.apply`: when the pattern matches the whole name, every
    /// match in it replaced (Java's `replaceAll`, which also replaces an
    /// empty match at the end: `RULE:.*/x/` gives `xx`), then the case flag.
    fn apply(&self, distinguished_name: &str) -> Option<String> {
        if !self.whole.is_match(distinguished_name) {
            return None;
        }
        let mut result = String::with_capacity(distinguished_name.len());
        let mut copied = 0;
        for captures in java_find_iter(&self.pattern, distinguished_name) {
            let Some(whole) = captures.get(0) else {
                continue;
            };
            result.push_str(
                distinguished_name
                    .get(copied..whole.start())
                    .unwrap_or_default(),
            );
            for piece in &self.replacement {
                match piece {
                    Piece::Literal(text) => result.push_str(text),
                    // A group that took no part in the match adds nothing.
                    Piece::Group(index) => {
                        if let Some(group) = captures.get(*index) {
                            result.push_str(group.as_str());
                        }
                    }
                }
            }
            copied = whole.end();
        }
        result.push_str(distinguished_name.get(copied..).unwrap_or_default());
        Some(match self.case {
            Case::Keep => result,
            Case::Lower => result.to_lowercase(),
            Case::Upper => result.to_uppercase(),
        })
    }
}

/// A piece of a parsed replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Group(usize),
}

/// Rewrites the few escapes that mean something else to the regex crate
/// than to Java: `\d \D \w \W \s \S` become Java's ASCII classes (the regex
/// crate's are Unicode), and `\<` `\>` become the literal characters (the
/// regex crate reads them as word boundaries). Every other escape is kept.
/// The ASCII classes are bracketed, so they also work inside a class
/// (`[\d_]` becomes `[[0-9]_]`, a union).
///
/// A possessive quantifier (`a++`, `a*+`, `a?+`, `a{2}+`) is refused: the
/// regex crate would read it as a repetition of a repetition, which gives
/// back what Java's never does, so the rule would match other names.
fn java_pattern_to_rust(pattern: &str) -> Result<String, &'static str> {
    let mut rust = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    // Nesting of character classes (Java nests them), where `+` is a
    // character and not a quantifier.
    let mut class_depth = 0usize;
    // Whether the last thing read was a quantifier outside a class.
    let mut after_quantifier = false;
    while let Some(c) = chars.next() {
        if c != '\\' {
            match c {
                '[' => class_depth += 1,
                ']' => class_depth = class_depth.saturating_sub(1),
                '+' if class_depth == 0 && after_quantifier => {
                    return Err("possessive quantifiers are Java-only");
                }
                _ => {}
            }
            after_quantifier = class_depth == 0
                && match c {
                    // `?` after a quantifier makes it lazy; it quantifies nothing.
                    '?' => !after_quantifier,
                    '*' | '+' | '}' => true,
                    _ => false,
                };
            rust.push(c);
            continue;
        }
        after_quantifier = false;
        let Some(escaped) = chars.next() else {
            // A trailing backslash: the regex crate refuses it, as Java does.
            rust.push(c);
            break;
        };
        match escaped {
            'd' => rust.push_str("[0-9]"),
            'D' => rust.push_str("[^0-9]"),
            'w' => rust.push_str("[a-zA-Z_0-9]"),
            'W' => rust.push_str("[^a-zA-Z_0-9]"),
            's' => rust.push_str(JAVA_SPACE),
            'S' => rust.push_str(r"[^ \t\n\x0B\f\r]"),
            '<' | '>' => rust.push(escaped),
            other => {
                rust.push('\\');
                rust.push(other);
            }
        }
    }
    Ok(rust)
}

/// Kafka's `escapeLiteralBackReferences`: a `$N` naming a group the pattern
/// does not have gets a backslash before it, so Java copies it as text.
/// Like Kafka, a number too large is first cut to its leading digits while
/// that names no group (with 2 groups, `$12` is `$1` then `2`), `$0...` is
/// left alone, and nothing is done when the pattern has no groups.
///
/// Kafka finds the references in the replacement as written but inserts
/// each backslash into the replacement already changed, at the position
/// found: with two or more references to escape, the later backslashes
/// land early. This reproduces that, counting positions in UTF-16 units as
/// Java does, so that such a rule gives what Kafka gives.
fn escape_literal_back_references(replacement: &str, groups: usize) -> Result<String, String> {
    if groups == 0 {
        return Ok(replacement.to_owned());
    }
    let written: Vec<u16> = replacement.encode_utf16().collect();
    let mut escaped = written.clone();
    let is_digit = |unit: &u16| (u16::from(b'0')..=u16::from(b'9')).contains(unit);
    let mut at = 0;
    while at < written.len() {
        let dollar = written.get(at) == Some(&u16::from(b'$'));
        let digits = written.get(at + 1..).map_or(0, |rest| {
            rest.iter().take_while(|unit| is_digit(unit)).count()
        });
        if !dollar || digits == 0 {
            at += 1;
            continue;
        }
        let number = written
            .get(at + 1..at + 1 + digits)
            .map(String::from_utf16_lossy)
            .unwrap_or_default();
        let dollar_at = at;
        at += 1 + digits;
        if number.starts_with('0') {
            continue;
        }
        // Java's Integer.parseInt: a number past i32 throws, and Kafka's
        // rule then fails every client it matches.
        let mut index: usize = number
            .parse::<i32>()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("group reference ${number} is too large"))?;
        while index > groups && index >= 10 {
            index /= 10;
        }
        if index > groups {
            let position = dollar_at.min(escaped.len());
            escaped.insert(position, u16::from(b'\\'));
        }
    }
    Ok(String::from_utf16_lossy(&escaped))
}

/// Reads a replacement as Java's `Matcher.appendReplacement` does: `\x` is
/// the character x, `${name}` a named group, `$` and digits a group (the
/// first digit always, each further digit while the number still names a
/// group), anything else itself. Java's failures are errors here.
fn parse_replacement(
    replacement: &str,
    groups: usize,
    names: &HashMap<&str, usize>,
) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let escaped = chars
                    .next()
                    .ok_or("character to be escaped is missing (a trailing `\\`)")?;
                literal.push(escaped);
            }
            '$' => {
                let index = match chars.next() {
                    None => return Err("group index is missing after a trailing `$`".to_owned()),
                    Some('{') => {
                        let mut name = String::new();
                        while let Some(&next) = chars.peek() {
                            if !next.is_ascii_alphanumeric() {
                                break;
                            }
                            name.push(next);
                            chars.next();
                        }
                        if name.is_empty() {
                            return Err("named capturing group has 0 length name".to_owned());
                        }
                        if chars.next() != Some('}') {
                            return Err(format!(
                                "named capturing group {{{name} is missing trailing '}}'"
                            ));
                        }
                        if name.starts_with(|c: char| c.is_ascii_digit()) {
                            return Err(format!(
                                "capturing group name {{{name}}} starts with a digit"
                            ));
                        }
                        *names
                            .get(name.as_str())
                            .ok_or_else(|| format!("no group with name {{{name}}}"))?
                    }
                    Some(first) => {
                        let mut index = first
                            .to_digit(10)
                            .map(|d| d as usize)
                            .ok_or_else(|| format!("illegal group reference `${first}`"))?;
                        while let Some(digit) = chars.peek().and_then(|c| c.to_digit(10)) {
                            let longer = index.saturating_mul(10).saturating_add(digit as usize);
                            if longer > groups {
                                break;
                            }
                            index = longer;
                            chars.next();
                        }
                        if index > groups {
                            return Err(format!("no group {index}"));
                        }
                        index
                    }
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Group(index));
            }
            other => literal.push(other),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(rules: &str) -> SslPrincipalMapper {
        match SslPrincipalMapper::parse(rules) {
            Ok(mapper) => mapper,
            Err(err) => panic!("{rules:?} refused: {err}"),
        }
    }

    fn name(mapper: &SslPrincipalMapper, dn: &str) -> String {
        match mapper.principal_name(dn) {
            Ok(name) => name,
            Err(err) => panic!("{dn:?}: {err}"),
        }
    }

    #[test]
    fn the_grammar_compiles() {
        LazyLock::force(&RULE_SPLITTER);
        LazyLock::force(&RULE_PARSER);
    }

    #[test]
    fn principals_print_as_kafka_prints_them() {
        assert_eq!(KafkaPrincipal::user("alice").to_string(), "User:alice");
        assert_eq!(KafkaPrincipal::anonymous().to_string(), "User:ANONYMOUS");
        assert_eq!(
            SslPrincipalMapper::default()
                .principal("CN=client")
                .map(|p| p.to_string()),
            Ok("User:CN=client".to_owned())
        );
    }

    #[test]
    fn default_gives_the_distinguished_name_unchanged() {
        let dn = "CN=Duke,OU=JavaSoft,O=Sun Microsystems,C=US";
        assert_eq!(name(&SslPrincipalMapper::default(), dn), dn);
        assert_eq!(name(&mapper("DEFAULT"), dn), dn);
    }

    /// The rules of Kafka's documentation of `ssl.principal.mapping.rules`
    /// (and its tests), with the names they give.
    #[test]
    fn the_documented_example_rules_map_as_in_kafka() {
        let documented = mapper(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,\
             DEFAULT",
        );
        assert_eq!(
            name(
                &documented,
                "CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown"
            ),
            "serviceuser"
        );
        assert_eq!(
            name(
                &documented,
                "CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown"
            ),
            "adminuser@admin"
        );
        assert_eq!(
            name(&documented, "OU=JavaSoft,CN=Duke.Dev,O=Sun"),
            "duke.dev"
        );
        assert_eq!(
            name(&documented, "OU=JavaSoft,O=Sun Microsystems,C=US"),
            "OU=JavaSoft,O=Sun Microsystems,C=US"
        );

        let rules = mapper(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, \
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, \
             RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U, \
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, \
             DEFAULT",
        );
        assert_eq!(name(&rules, "CN=Duke,OU=ServiceUsers,O=Org,C=US"), "duke");
        assert_eq!(
            name(&rules, "CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US"),
            "duke@sme"
        );
        assert_eq!(name(&rules, "cn=duke,ou=sme,dc=mycp,dc=com"), "DUKE@SME");
        assert_eq!(
            name(&rules, "cN=duke,OU=JavaSoft,O=Sun Microsystems"),
            "DUKE"
        );
        assert_eq!(
            name(&rules, "OU=JavaSoft,O=Sun Microsystems,C=US"),
            "OU=JavaSoft,O=Sun Microsystems,C=US"
        );
    }

    #[test]
    fn case_flags_lower_and_upper_the_result_only() {
        let lower = mapper("RULE:^CN=([^,]*),O=(.*)$/$1 of $2/L");
        assert_eq!(name(&lower, "CN=Alice,O=ACME"), "alice of acme");
        let upper = mapper("RULE:^CN=([^,]*),O=(.*)$/$1 of $2/U");
        assert_eq!(name(&upper, "CN=Alice,O=Acme"), "ALICE OF ACME");
        let keep = mapper("RULE:^CN=([^,]*),O=(.*)$/$1 of $2/");
        assert_eq!(name(&keep, "CN=Alice,O=Acme"), "Alice of Acme");
    }

    #[test]
    fn no_matching_rule_refuses_and_names_the_dn_and_rules() {
        let rules = mapper("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L");
        let err = rules.principal_name("CN=alice,OU=Staff");
        assert_eq!(
            err,
            Err(NoMatchingRule {
                distinguished_name: "CN=alice,OU=Staff".to_owned(),
                rules: "[RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L]".to_owned(),
            })
        );
        // An empty rules string has no rules, so applies to nothing.
        assert!(mapper("").principal_name("CN=alice").is_err());
        // A rule applies only when its pattern matches the whole name.
        assert!(
            mapper("RULE:CN=alice/x/")
                .principal_name("CN=alice,O=acme")
                .is_err()
        );
    }

    #[test]
    fn malformed_rules_are_refused() {
        for rules in [
            "default",
            "DEFAUL",
            "DEFAULT/L",
            "DEFAULT/U",
            "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
            "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
            "RULE:^CN=(.*?)$/$1/ L",
            "DEFAULT,RULE:nope",
        ] {
            assert!(
                matches!(
                    SslPrincipalMapper::parse(rules),
                    Err(MappingRulesError::Invalid { .. })
                ),
                "{rules:?} accepted"
            );
        }
        let err = SslPrincipalMapper::parse("DEFAULT/L")
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err("invalid rule `DEFAULT/L`, unmatched substring: `/L`".to_owned())
        );
    }

    #[test]
    fn valid_rules_of_kafkas_tests_are_accepted() {
        for rules in [
            "DEFAULT",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
            "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
            "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
            "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
        ] {
            mapper(rules);
        }
    }

    /// Kafka's own splitting cases, compared through the printed rules.
    #[test]
    fn rules_split_as_kafka_splits_them() {
        for (rules, printed) in [
            ("", "[]"),
            ("DEFAULT", "[DEFAULT]"),
            ("RULE://", "[RULE:/]"),
            ("RULE:/.*/", "[RULE:/.*]"),
            ("RULE:/.*/L", "[RULE:/.*/L]"),
            ("RULE://,DEFAULT", "[RULE:/, DEFAULT]"),
            ("  RULE:// ,  DEFAULT  ", "[RULE:/, DEFAULT]"),
            (
                "  RULE:   /     / ,  DEFAULT  ",
                "[RULE:   /     , DEFAULT]",
            ),
            (
                "  RULE:  /     /U   ,DEFAULT  ",
                "[RULE:  /     /U, DEFAULT]",
            ),
            (
                "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ",
                "[RULE:([A-Z]*)/$1/U, RULE:([a-z]+)/$1, DEFAULT]",
            ),
            // Empty rules are ignored.
            (",   , , ,      , , ,   ", "[]"),
            (",,RULE://,,,DEFAULT,,", "[RULE:/, DEFAULT]"),
            (
                ",  , RULE: /   /    ,,,   DEFAULT, ,   ",
                "[RULE: /   , DEFAULT]",
            ),
            (
                "     ,  , RULE:   /  /U    ,,  ,DEFAULT, ,",
                "[RULE:   /  /U, DEFAULT]",
            ),
            // Escapes: `\/` does not end a part.
            (r"RULE:\/\\\(\)\n\t/\/\//", r"[RULE:\/\\\(\)\n\t/\/\/]"),
            (
                r"RULE:\**\/+/*/L,RULE:\/*\**/**/",
                r"[RULE:\**\/+/*/L, RULE:\/*\**/**]",
            ),
            // Commas and `RULE:` inside patterns and replacements.
            (
                r"RULE:,RULE:,/,RULE:,\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,RULE:, DEFAULT, /DEFAULT/,DEFAULT",
                r"[RULE:,RULE:,/,RULE:,\//U, RULE:,/RULE:,, RULE:,RULE:,/L,RULE:,/L, RULE:, DEFAULT, /DEFAULT, DEFAULT]",
            ),
            // Rules on separate lines.
            (
                "RULE:^CN=(.*)$/$1/L,\n  DEFAULT\n",
                "[RULE:^CN=(.*)$/$1/L, DEFAULT]",
            ),
        ] {
            assert_eq!(mapper(rules).to_string(), printed, "{rules:?}");
        }
    }

    #[test]
    fn an_escaped_comma_in_a_name_can_be_matched() {
        let rules = mapper(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT");
        assert_eq!(
            name(&rules, r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz"),
            r"Tkac\, Adam"
        );
    }

    #[test]
    fn slashes_in_patterns_and_replacements_are_escaped() {
        let rules = mapper(r"RULE:^CN=([^,]*),OU=a\/b$/$1\/x/");
        assert_eq!(name(&rules, "CN=alice,OU=a/b"), "alice/x");
    }

    #[test]
    fn references_to_missing_groups_are_literal_text() {
        // Three groups: $4 is text; $12 is group 1 then "2".
        let rules = mapper("RULE:^CN=(.*?),OU=(.*?),O=(.*?)$/$1@$4 $12/");
        assert_eq!(name(&rules, "CN=a,OU=b,O=c"), "a@$4 a2");
        // $0 is the whole match; \$ a dollar sign; ${name} a named group.
        let rules = mapper(r"RULE:^CN=(?<user>[^,]*).*$/${user} \$ $0/");
        assert_eq!(name(&rules, "CN=a,O=c"), "a $ CN=a,O=c");
        // Kafka's offset slip: the second backslash lands one place early,
        // escaping the `5` instead of the `$` before `6`, so `$6` stays a
        // reference to a group that does not exist, which Java fails on.
        assert!(matches!(
            SslPrincipalMapper::parse("RULE:^(.*)$/$5$6/"),
            Err(MappingRulesError::Replacement { .. })
        ));
    }

    #[test]
    fn replacements_java_fails_on_are_refused() {
        for rules in [
            "RULE:^(.*)$/$1$/",
            "RULE:^(.*)$/$x/",
            "RULE:^.*$/$1/",
            "RULE:^(.*)$/${nope}/",
            "RULE:^(.*)$/${}/",
            "RULE:^(.*)$/$99999999999/",
        ] {
            assert!(
                matches!(
                    SslPrincipalMapper::parse(rules),
                    Err(MappingRulesError::Replacement { .. })
                ),
                "{rules:?} accepted"
            );
        }
    }

    #[test]
    fn patterns_only_java_runs_are_refused() {
        for rules in [
            "RULE:^(?=CN).*$/x/",
            r"RULE:^(a)\1$/x/",
            "RULE:^(.*$/x/",
            "RULE:^a++$/x/",
            "RULE:^a*+$/x/",
            "RULE:^a?+$/x/",
            "RULE:^a{2}+$/x/",
        ] {
            assert!(
                matches!(
                    SslPrincipalMapper::parse(rules),
                    Err(MappingRulesError::Pattern { .. } | MappingRulesError::JavaOnly { .. })
                ),
                "{rules:?} accepted"
            );
        }
        // A `+` in a class, after an escape, or after a lazy quantifier's
        // `?` is no possessive quantifier.
        for rules in [r"RULE:^[a+]+$/x/", r"RULE:^\++$/x/", "RULE:^(a+?)$/x/"] {
            mapper(rules);
        }
    }

    #[test]
    fn every_match_is_replaced_as_by_java_replace_all() {
        // `.*` matches the whole name and then the empty end: Java's
        // replaceAll gives the replacement twice.
        assert_eq!(name(&mapper("RULE:.*/x/"), "CN=a"), "xx");
        // Anchored, the pattern matches once.
        assert_eq!(name(&mapper("RULE:^.*$/x/"), "CN=a"), "x");
    }

    #[test]
    fn java_escapes_keep_their_java_meaning() {
        // \d is ASCII digits only in Java.
        let digits = mapper(r"RULE:^CN=(\d+)$/$1/");
        assert_eq!(name(&digits, "CN=42"), "42");
        assert!(digits.principal_name("CN=٤٢").is_err());
        // \< and \> are the characters, not word boundaries.
        let angle = mapper(r"RULE:^CN=\\\<(\w+)\\\>$/$1/");
        assert_eq!(name(&angle, r"CN=\<bob\>"), "bob");
    }
}
