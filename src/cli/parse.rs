//! The command language of `shale cli`: one line -> one [`Action`], before any I/O.
//!
//! # Words
//! A line splits into words at whitespace, the way a shell does, minus everything a shell expands:
//! - `"..."` keeps spaces; inside it `\"` and `\\` stand for `"` and `\`, any other backslash is kept as is
//!   (so JSON escapes such as `\n` or `\u00e9` pass through untouched).
//! - `'...'` keeps everything literally, backslashes included.
//! - Outside quotes, `\` takes the next character literally (`my\ key` is one word).
//! - Quoted and unquoted parts that touch make one word (`a"b c"` is `ab c`); `""` is an empty word.
//!
//! A blank line, or one whose first word starts with `#`, is no command. Command names are case-insensitive.
//! `doc put` is the exception to word splitting: its JSON is the raw rest of the line, so
//! `doc put {"name": "x"}` needs no extra quoting.

use std::fmt;

/// One command of the language, with its arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `put KEY VALUE`: store VALUE under KEY.
    Put { key: String, value: Vec<u8> },
    /// `get KEY`: the value of KEY.
    Get { key: String },
    /// `delete KEY`: remove KEY.
    Delete { key: String },
    /// `keys [PREFIX]`: every key (starting with PREFIX), in byte order.
    Keys { prefix: Option<String> },
    /// `incr NAME [DELTA]`: add DELTA (default 1) to counter NAME.
    Incr { name: String, delta: i64 },
    /// `count NAME`: the value of counter NAME.
    Count { name: String },
    /// `doc get ID`: the document with this id.
    DocGet { id: u64 },
    /// `doc put [ID] JSON`: create (no ID) or replace document ID.
    DocPut { id: Option<u64>, data: serde_json::Value },
    /// `help`: the list of commands.
    Help,
    /// `quit` or `exit`: leave the shell.
    Quit,
}

/// A line that is not a valid command, with a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn usage(text: &str) -> ParseError {
    ParseError(format!("usage: {text}"))
}

/// The help text of the shell: one line per command.
pub const HELP: &str = "\
commands:
  put KEY VALUE        store VALUE under KEY (quote either with \"...\" or '...' when it has spaces)
  get KEY              print the value of KEY, or (not found)
  delete KEY           remove KEY
  keys [PREFIX]        list every key, or those starting with PREFIX
  incr NAME [DELTA]    add DELTA (default 1, may be negative) to counter NAME
  count NAME           print the value of counter NAME
  doc get ID           print document ID, or (not found)
  doc put [ID] JSON    create a document (new id) or replace document ID; JSON is the rest of the line
  help                 this list
  quit, exit, Ctrl-D   leave";

/// Parses one line. `Ok(None)` for a blank line or a `#` comment.
///
/// # Errors
/// A [`ParseError`] saying what is wrong: an unknown command, a wrong number of arguments, an unterminated
/// quote, a DELTA or ID that is not a number, or JSON that does not parse.
pub fn parse_line(line: &str) -> Result<Option<Action>, ParseError> {
    let mut lexer = Lexer::new(line);
    let Some(first) = lexer.next_word()? else {
        return Ok(None);
    };
    if !first.quoted && first.text.starts_with('#') {
        return Ok(None);
    }
    let name = first.text.to_ascii_lowercase();
    if name == "doc" {
        return parse_doc(&mut lexer).map(Some);
    }
    let args = lexer.remaining_words()?;
    let action = match (name.as_str(), args.as_slice()) {
        ("put" | "set", [key, value]) => Action::Put { key: key_arg(key)?, value: value.clone().into_bytes() },
        ("put" | "set", _) => return Err(usage("put KEY VALUE")),
        ("get", [key]) => Action::Get { key: key_arg(key)? },
        ("get", _) => return Err(usage("get KEY")),
        ("delete" | "del", [key]) => Action::Delete { key: key_arg(key)? },
        ("delete" | "del", _) => return Err(usage("delete KEY")),
        ("keys", []) => Action::Keys { prefix: None },
        ("keys", [prefix]) => Action::Keys { prefix: Some(prefix.clone()) },
        ("keys", _) => return Err(usage("keys [PREFIX]")),
        ("incr", [name]) => Action::Incr { name: key_arg(name)?, delta: 1 },
        ("incr", [name, delta]) => Action::Incr { name: key_arg(name)?, delta: parse_delta(delta)? },
        ("incr", _) => return Err(usage("incr NAME [DELTA]")),
        ("count", [name]) => Action::Count { name: key_arg(name)? },
        ("count", _) => return Err(usage("count NAME")),
        ("help" | "?", _) => Action::Help,
        ("quit" | "exit", []) => Action::Quit,
        ("quit" | "exit", _) => return Err(usage("quit")),
        _ => return Err(ParseError(format!("unknown command `{}` (type `help` for the list)", first.text))),
    };
    Ok(Some(action))
}

/// A key or counter name: any non-empty text.
fn key_arg(text: &str) -> Result<String, ParseError> {
    if text.is_empty() {
        return Err(ParseError("the key is empty".into()));
    }
    Ok(text.to_string())
}

/// A counter increment: a decimal i64, sign allowed.
pub fn parse_delta(text: &str) -> Result<i64, ParseError> {
    text.parse::<i64>().map_err(|_| ParseError(format!("DELTA must be a whole number like 5 or -2, not `{text}`")))
}

/// A document id: a positive integer.
pub fn parse_id(text: &str) -> Result<u64, ParseError> {
    match text.parse::<u64>() {
        Ok(0) | Err(_) => Err(ParseError(format!("ID must be a positive whole number, not `{text}`"))),
        Ok(id) => Ok(id),
    }
}

/// `doc get ID` or `doc put [ID] JSON`, after the word `doc`.
fn parse_doc(lexer: &mut Lexer<'_>) -> Result<Action, ParseError> {
    let sub = lexer.next_word()?.map(|w| w.text.to_ascii_lowercase());
    match sub.as_deref() {
        Some("get") => match lexer.remaining_words()?.as_slice() {
            [id] => Ok(Action::DocGet { id: parse_id(id)? }),
            _ => Err(usage("doc get ID")),
        },
        Some("put") => {
            let rest = lexer.rest();
            if rest.is_empty() {
                return Err(usage("doc put [ID] JSON"));
            }
            // `7 {"a":1}`: a leading number followed by more is the id; a lone number is the document.
            if let Some((head, tail)) = rest.split_once(char::is_whitespace) {
                if !tail.trim().is_empty() && head.bytes().all(|b| b.is_ascii_digit()) {
                    return Ok(Action::DocPut { id: Some(parse_id(head)?), data: parse_json(tail)? });
                }
            }
            Ok(Action::DocPut { id: None, data: parse_json(rest)? })
        }
        _ => Err(usage("doc get ID | doc put [ID] JSON")),
    }
}

/// JSON as typed (`{"a": 1}`), or as one quoted word (`'{"a": 1}'`).
fn parse_json(text: &str) -> Result<serde_json::Value, ParseError> {
    let text = text.trim();
    let raw_err = match serde_json::from_str(text) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    if let Ok(words) = Lexer::new(text).remaining_words() {
        if let [word] = words.as_slice() {
            if let Ok(value) = serde_json::from_str(word) {
                return Ok(value);
            }
        }
    }
    Err(ParseError(format!("the document is not valid JSON: {raw_err}")))
}

// ---- word splitting ----

/// One word of a line.
#[derive(Debug)]
struct Word {
    /// The text after removing quotes and escapes.
    text: String,
    /// Whether any part of it was quoted or escaped (so `"#x"` is a word, not a comment).
    quoted: bool,
}

/// Splits a line into words one at a time, so a caller can take the raw rest of the line instead.
struct Lexer<'a> {
    line: &'a str,
    /// Byte offset of the next unread character.
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(line: &'a str) -> Self {
        Lexer { line, pos: 0 }
    }

    /// The unread rest of the line, without surrounding whitespace.
    fn rest(&self) -> &'a str {
        self.line[self.pos..].trim()
    }

    fn remaining_words(&mut self) -> Result<Vec<String>, ParseError> {
        let mut words = Vec::new();
        while let Some(word) = self.next_word()? {
            words.push(word.text);
        }
        Ok(words)
    }

    fn next_word(&mut self) -> Result<Option<Word>, ParseError> {
        let mut chars = self.line[self.pos..].char_indices().peekable();
        // Skip leading whitespace.
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            self.pos = self.line.len();
            return Ok(None);
        }
        let mut text = String::new();
        let mut quoted = false;
        let mut end = self.line.len() - self.pos;
        while let Some((i, c)) = chars.next() {
            match c {
                c if c.is_whitespace() => {
                    end = i;
                    break;
                }
                '\\' => {
                    quoted = true;
                    match chars.next() {
                        Some((_, next)) => text.push(next),
                        None => return Err(ParseError("the line ends with a lone backslash".into())),
                    }
                }
                '\'' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            Some((_, '\'')) => break,
                            Some((_, c)) => text.push(c),
                            None => return Err(ParseError("a single quote (') is not closed".into())),
                        }
                    }
                }
                '"' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            Some((_, '"')) => break,
                            Some((_, '\\')) => match chars.next_if(|(_, c)| *c == '"' || *c == '\\') {
                                Some((_, escaped)) => text.push(escaped),
                                None => text.push('\\'),
                            },
                            Some((_, c)) => text.push(c),
                            None => return Err(ParseError("a double quote (\") is not closed".into())),
                        }
                    }
                }
                c => text.push(c),
            }
        }
        self.pos += end;
        Ok(Some(Word { text, quoted }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(line: &str) -> Action {
        parse_line(line).unwrap_or_else(|e| panic!("{line:?} should parse: {e}")).expect("a command")
    }

    fn err(line: &str) -> String {
        match parse_line(line) {
            Err(e) => e.0,
            Ok(a) => panic!("{line:?} should fail, got {a:?}"),
        }
    }

    fn put(key: &str, value: &str) -> Action {
        Action::Put { key: key.into(), value: value.as_bytes().to_vec() }
    }

    #[test]
    fn plain_words() {
        assert_eq!(ok("put a 1"), put("a", "1"));
        assert_eq!(ok("  put\ta   1  "), put("a", "1"));
        assert_eq!(ok("get shopping/milk"), Action::Get { key: "shopping/milk".into() });
        assert_eq!(ok("delete k"), Action::Delete { key: "k".into() });
        assert_eq!(ok("keys"), Action::Keys { prefix: None });
        assert_eq!(ok("keys user/"), Action::Keys { prefix: Some("user/".into()) });
        assert_eq!(ok("count hits"), Action::Count { name: "hits".into() });
        assert_eq!(ok("help"), Action::Help);
        assert_eq!(ok("quit"), Action::Quit);
        assert_eq!(ok("exit"), Action::Quit);
    }

    #[test]
    fn names_are_case_insensitive_arguments_are_not() {
        assert_eq!(ok("PUT Key Value"), put("Key", "Value"));
        assert_eq!(ok("Get K"), Action::Get { key: "K".into() });
        assert_eq!(ok("DOC GET 3"), Action::DocGet { id: 3 });
    }

    #[test]
    fn double_quotes() {
        assert_eq!(ok(r#"put "my key" "a value with spaces""#), put("my key", "a value with spaces"));
        assert_eq!(ok(r#"put k "say \"hi\"""#), put("k", r#"say "hi""#));
        assert_eq!(ok(r#"put k "back\\slash""#), put("k", r"back\slash"));
        // Other backslashes are kept, so JSON escapes survive.
        assert_eq!(ok(r#"put k "a\nb""#), put("k", r"a\nb"));
        assert_eq!(ok(r#"put k "it's""#), put("k", "it's"));
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(ok(r"put 'my key' 'a \n \ b'"), put("my key", r"a \n \ b"));
        assert_eq!(ok(r#"put k 'say "hi"'"#), put("k", r#"say "hi""#));
    }

    #[test]
    fn backslash_outside_quotes_and_joined_parts() {
        assert_eq!(ok(r"put my\ key v"), put("my key", "v"));
        assert_eq!(ok(r#"put a"b c"d v"#), put("ab cd", "v"));
        assert_eq!(ok(r#"put k ''"#), put("k", ""));
        assert_eq!(ok(r#"put k """#), put("k", ""));
        assert_eq!(ok("put k é✓"), put("k", "é✓"));
    }

    #[test]
    fn blank_lines_and_comments_are_no_command() {
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("   \t "), Ok(None));
        assert_eq!(parse_line("# put a 1"), Ok(None));
        assert_eq!(parse_line("  #comment"), Ok(None));
        // A quoted # is a word, and a # later on the line is part of a value.
        assert!(err(r##""#x""##).contains("unknown command"));
        assert_eq!(ok("put k #1"), put("k", "#1"));
    }

    #[test]
    fn unterminated_quotes_and_trailing_backslash() {
        assert!(err(r#"put k "abc"#).contains("double quote"));
        assert!(err("put k 'abc").contains("single quote"));
        assert!(err(r"put k abc\").contains("backslash"));
    }

    #[test]
    fn wrong_arguments() {
        assert_eq!(err("put"), "usage: put KEY VALUE");
        assert_eq!(err("put k"), "usage: put KEY VALUE");
        assert_eq!(err("put k a b"), "usage: put KEY VALUE");
        assert_eq!(err("get"), "usage: get KEY");
        assert_eq!(err("get a b"), "usage: get KEY");
        assert_eq!(err("delete"), "usage: delete KEY");
        assert_eq!(err("keys a b"), "usage: keys [PREFIX]");
        assert_eq!(err("incr"), "usage: incr NAME [DELTA]");
        assert_eq!(err("count"), "usage: count NAME");
        assert_eq!(err("quit now"), "usage: quit");
        assert!(err("frobnicate x").contains("unknown command `frobnicate`"));
        assert!(err(r#"get """#).contains("empty"));
    }

    #[test]
    fn counters() {
        assert_eq!(ok("incr hits"), Action::Incr { name: "hits".into(), delta: 1 });
        assert_eq!(ok("incr hits 5"), Action::Incr { name: "hits".into(), delta: 5 });
        assert_eq!(ok("incr hits -3"), Action::Incr { name: "hits".into(), delta: -3 });
        assert_eq!(ok("incr hits +2"), Action::Incr { name: "hits".into(), delta: 2 });
        assert!(err("incr hits x").contains("DELTA"));
        assert!(err("incr hits 1.5").contains("DELTA"));
        assert!(err("incr hits 99999999999999999999").contains("DELTA"));
        assert_eq!(err("incr a 1 2"), "usage: incr NAME [DELTA]");
    }

    #[test]
    fn documents() {
        assert_eq!(ok("doc get 7"), Action::DocGet { id: 7 });
        assert!(err("doc get 0").contains("positive"));
        assert!(err("doc get x").contains("positive"));
        assert!(err("doc get").starts_with("usage: doc get ID"));
        assert!(err("doc").starts_with("usage:"));
        assert!(err("doc list").starts_with("usage:"));

        let data = json!({"name": "x y", "n": [1, 2]});
        assert_eq!(ok(r#"doc put {"name": "x y", "n": [1, 2]}"#), Action::DocPut { id: None, data: data.clone() });
        assert_eq!(ok(r#"doc put 7 {"name": "x y", "n": [1, 2]}"#), Action::DocPut { id: Some(7), data });
        assert_eq!(ok(r#"doc put '{"a": "b c"}'"#), Action::DocPut { id: None, data: json!({"a": "b c"}) });
        assert_eq!(ok(r#"doc put 3 '{"a": 1}'"#), Action::DocPut { id: Some(3), data: json!({"a": 1}) });
        assert_eq!(
            ok(r#"doc put {"s": "it's \"q\" \u00e9"}"#),
            Action::DocPut { id: None, data: json!({"s": "it's \"q\" é"}) }
        );
        // A lone number is the document itself.
        assert_eq!(ok("doc put 42"), Action::DocPut { id: None, data: json!(42) });
        assert_eq!(ok("doc put 2 null"), Action::DocPut { id: Some(2), data: json!(null) });
        assert!(err("doc put 0 {}").contains("positive"));
        assert!(err("doc put").starts_with("usage: doc put"));
        assert!(err("doc put {nope").contains("not valid JSON"));
        assert!(err("doc put 5 {\"a\":").contains("not valid JSON"));
    }
}
