//! Envoy substitution format strings: `%COMMAND(SUBCOMMAND):LENGTH%` parsed once at config time
//! into a [`Template`], then evaluated against each [`LogRecord`].
//!
//! Parsing follows Envoy 1.40 (`SubstitutionFormatParser::parse`): `%%` is a literal `%`; a
//! command is `[A-Z0-9_]+`, its subcommand may hold anything but a newline (the shortest match
//! that lets the rest parse), and its length is decimal. Errors carry Envoy's own wording, so
//! `Not supported field in StreamInfo: X` reads the same from Tern as from Envoy.
//!
//! Operators Envoy knows but Tern does not record (TLS details, metadata, filter state, wire
//! byte counts...) are accepted and evaluate to "not set", printed `-`; an operator Envoy does
//! not know is a config error, as in Envoy.

use super::LogRecord;
use operator::Operator;
use std::borrow::Cow;
use std::fmt::Write as _;

mod operator;

pub(super) use operator::RESPONSE_FLAGS;

/// A parsed format string.
#[derive(Debug, Clone)]
pub(super) struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Operator(Operator),
}

/// What an operator yields for one record: Envoy's string, number or "not set".
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value<'a> {
    /// Not set: `-` in text (nothing with `omit_empty_values`), `null` in JSON.
    Null,
    Str(Cow<'a, str>),
    Num(u64),
}

/// Config-time switches that change which commands exist.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Commands {
    /// The `envoy.formatter.req_without_query` extension is configured.
    pub(super) req_without_query: bool,
}

impl Template {
    /// Parses `format` the way Envoy does.
    pub(super) fn parse(format: &str, commands: Commands) -> Result<Self, String> {
        let bytes = format.as_bytes();
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(offset) = format[pos..].find('%') else {
                literal.push_str(&format[pos..]);
                break;
            };
            literal.push_str(&format[pos..pos + offset]);
            pos += offset;
            if bytes.get(pos + 1) == Some(&b'%') {
                literal.push('%');
                pos += 2;
                continue;
            }
            let Some(token) = Token::at(&format[pos..]) else {
                return Err(format!(
                    "Incorrect configuration: {format}. Couldn't find valid command at position {pos}"
                ));
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Operator(Operator::parse(&token, commands)?));
            pos += token.len;
        }
        if !literal.is_empty() || pieces.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template { pieces })
    }

    /// A template that renders nothing.
    pub(super) fn empty() -> Self {
        Template {
            pieces: vec![Piece::Literal(String::new())],
        }
    }

    /// Appends the text rendering: "not set" prints `-`, or nothing when `omit_empty`.
    pub(super) fn render_into(&self, record: &LogRecord, omit_empty: bool, out: &mut String) {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Operator(op) => match op.value(record) {
                    Value::Null if omit_empty => {}
                    Value::Null => out.push('-'),
                    Value::Str(s) => out.push_str(&s),
                    Value::Num(n) => {
                        let _ = write!(out, "{n}");
                    }
                },
            }
        }
    }

    /// The JSON rendering: a lone operator keeps its type (number, string or null, as Envoy's
    /// `formatValue`); anything else is the text rendering as a string.
    pub(super) fn json_value(&self, record: &LogRecord, omit_empty: bool) -> serde_json::Value {
        match self.pieces.as_slice() {
            [Piece::Literal(text)] => serde_json::Value::String(text.clone()),
            [Piece::Operator(op)] => match op.value(record) {
                Value::Null => serde_json::Value::Null,
                Value::Str(s) => serde_json::Value::String(s.into_owned()),
                Value::Num(n) => serde_json::Value::from(n),
            },
            _ => {
                let mut text = String::new();
                self.render_into(record, omit_empty, &mut text);
                serde_json::Value::String(text)
            }
        }
    }
}

/// One `%COMMAND(SUBCOMMAND):LENGTH%` occurrence, as Envoy's
/// `^%([A-Z0-9_]+)(?:\((.*?)\))?(?::([0-9]+))?%` would match it.
struct Token<'a> {
    command: &'a str,
    subcommand: &'a str,
    length: Option<usize>,
    /// Bytes spanned, both `%` included.
    len: usize,
}

impl<'a> Token<'a> {
    /// Matches at the start of `s`, which begins with `%`.
    fn at(s: &'a str) -> Option<Self> {
        let bytes = s.as_bytes();
        let end = 1 + bytes
            .get(1..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'_')
            .count();
        if end == 1 {
            return None;
        }
        let command = &s[1..end];
        if bytes.get(end) == Some(&b'(') {
            // The subcommand is the shortest run (without newlines) after which the rest parses.
            for close in end + 1..bytes.len() {
                match bytes[close] {
                    b'\n' => break,
                    b')' => {
                        if let Some((length, after)) = Self::tail(bytes, close + 1) {
                            return Some(Token {
                                command,
                                subcommand: &s[end + 1..close],
                                length,
                                len: after,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        let (length, after) = Self::tail(bytes, end)?;
        Some(Token {
            command,
            subcommand: "",
            length,
            len: after,
        })
    }

    /// `(?::([0-9]+))?%` at `at`: the length, if any, and the index after the closing `%`.
    fn tail(bytes: &[u8], at: usize) -> Option<(Option<usize>, usize)> {
        if bytes.get(at) == Some(&b':') {
            let digits = bytes[at + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let close = at + 1 + digits;
            if digits > 0 && bytes.get(close) == Some(&b'%') {
                // A length too large for usize fails to match, as in Envoy.
                let length = std::str::from_utf8(&bytes[at + 1..close])
                    .ok()?
                    .parse()
                    .ok()?;
                return Some((Some(length), close + 1));
            }
        }
        (bytes.get(at) == Some(&b'%')).then_some((None, at + 1))
    }
}

/// Which parameters a command takes (Envoy's `CommandSyntaxChecker` flags).
#[derive(Clone, Copy)]
struct Syntax {
    params: Params,
    length: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Params {
    None,
    Optional,
    Required,
}

const COMMAND_ONLY: Syntax = Syntax {
    params: Params::None,
    length: false,
};
const PARAMS_OPTIONAL: Syntax = Syntax {
    params: Params::Optional,
    length: false,
};
const PARAMS_REQUIRED_LENGTH: Syntax = Syntax {
    params: Params::Required,
    length: true,
};
const PARAMS_OPTIONAL_LENGTH: Syntax = Syntax {
    params: Params::Optional,
    length: true,
};

impl Syntax {
    fn verify(self, command: &str, token: &Token<'_>) -> Result<(), String> {
        let has_params = !token.subcommand.is_empty();
        if self.params == Params::None && (has_params || token.length.is_some()) {
            return Err(format!("{command} does not take any parameters or length"));
        }
        if self.params == Params::Required && !has_params {
            return Err(format!("{command} requires parameters"));
        }
        if !self.length && token.length.is_some() {
            return Err(format!("{command} does not allow length to be specified."));
        }
        Ok(())
    }
}
