//! Reads an nginx snippet (`configuration-snippet`, `server-snippet`, ...) into
//! directives, as nginx's own tokenizer would: words, quoted strings with
//! backslash escapes, `#` comments, `;` ends a directive, `{ }` a block, and an
//! `if (...)` condition kept whole. Nothing here runs anything: `discovery`
//! interprets the directives it knows and warns about the rest.
//!
//! Bounded: the text is an annotation value (at most `MAX_SNIPPET_LEN`),
//! blocks nest at most `MAX_DEPTH` deep, and at most `MAX_DIRECTIVES` are read.

/// Longest snippet read.
pub const MAX_SNIPPET_LEN: usize = 32 << 10;
const MAX_DEPTH: usize = 8;
const MAX_DIRECTIVES: usize = 512;

/// One directive: `name arg...;` or `name arg... { block }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    /// For `if`: the condition's words, without the parentheses.
    pub condition: Vec<String>,
    pub block: Option<Vec<Directive>>,
}

/// Directives that grant or restrict access. When a snippet holds one and sluice
/// cannot interpret the whole snippet, the Ingress fails closed.
pub const ACCESS_DIRECTIVES: &[&str] = &[
    "allow",
    "deny",
    "satisfy",
    "auth_basic",
    "auth_basic_user_file",
    "auth_request",
    "auth_request_set",
    "auth_jwt",
    "auth_jwt_key_file",
    "access_by_lua",
    "access_by_lua_block",
    "access_by_lua_file",
    "modsecurity",
    "modsecurity_rules",
    "modsecurity_rules_file",
    "ssl_verify_client",
    "ssl_client_certificate",
];

/// Whether this directive grants or restricts access: one of
/// `ACCESS_DIRECTIVES`, or `return 401` / `return 403`.
pub fn is_access(directive: &Directive) -> bool {
    ACCESS_DIRECTIVES.contains(&directive.name.as_str())
        || (directive.name == "return"
            && matches!(
                directive.args.first().map(String::as_str),
                Some("401" | "403")
            ))
}

/// Whether the raw text names an access directive anywhere, for a snippet that
/// could not even be read.
pub fn mentions_access(text: &str) -> Option<&'static str> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ';' || c == '{' || c == '}')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, word) in words.iter().enumerate() {
        if let Some(found) = ACCESS_DIRECTIVES.iter().find(|d| *d == word) {
            return Some(found);
        }
        if *word == "return" && matches!(words.get(i + 1), Some(&"401" | &"403")) {
            return Some("return");
        }
    }
    None
}

/// Reads a snippet; an error says where it stopped.
pub fn parse(text: &str) -> Result<Vec<Directive>, String> {
    if text.len() > MAX_SNIPPET_LEN {
        return Err(format!("longer than {MAX_SNIPPET_LEN} bytes"));
    }
    let mut reader = Reader {
        chars: text.chars().collect(),
        at: 0,
        count: 0,
    };
    let directives = reader.block(0)?;
    Ok(directives)
}

/// An `if`'s words as nginx reads them: the first starts with `(`, the last
/// ends with `)`, and both are stripped.
fn condition(mut words: Vec<String>) -> Result<Vec<String>, String> {
    let opens = words.first().is_some_and(|w| w.starts_with('('));
    let closes = words.last().is_some_and(|w| w.ends_with(')'));
    if !opens || !closes {
        return Err("if needs a condition in parentheses".into());
    }
    if let Some(first) = words.first_mut() {
        first.remove(0);
    }
    if let Some(last) = words.last_mut() {
        last.pop();
    }
    words.retain(|w| !w.is_empty());
    Ok(words)
}

struct Reader {
    chars: Vec<char>,
    at: usize,
    count: usize,
}

enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
    End,
}

impl Reader {
    fn block(&mut self, depth: usize) -> Result<Vec<Directive>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("blocks nested deeper than {MAX_DEPTH}"));
        }
        let mut directives = Vec::new();
        loop {
            let name = match self.token()? {
                Token::End if depth == 0 => return Ok(directives),
                Token::End => return Err("a block is not closed with '}'".into()),
                Token::Close if depth > 0 => return Ok(directives),
                Token::Close => return Err("unexpected '}'".into()),
                Token::Semicolon => continue,
                Token::Open => return Err("a block without a directive".into()),
                Token::Word(name) => name,
            };
            self.count += 1;
            if self.count > MAX_DIRECTIVES {
                return Err(format!("more than {MAX_DIRECTIVES} directives"));
            }
            let mut directive = Directive {
                condition: Vec::new(),
                args: Vec::new(),
                block: None,
                name,
            };
            loop {
                match self.token()? {
                    Token::Word(word) => directive.args.push(word),
                    Token::Semicolon => break,
                    Token::Open => {
                        directive.block = Some(self.block(depth + 1)?);
                        break;
                    }
                    Token::Close | Token::End => {
                        return Err(format!(
                            "directive {:?} is not ended with ';'",
                            directive.name
                        ))
                    }
                }
            }
            if directive.name == "if" {
                directive.condition = condition(std::mem::take(&mut directive.args))?;
            }
            directives.push(directive);
        }
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.chars.get(self.at) {
            if c.is_whitespace() {
                self.at += 1;
            } else if *c == '#' {
                while self.chars.get(self.at).is_some_and(|c| *c != '\n') {
                    self.at += 1;
                }
            } else {
                break;
            }
        }
    }

    fn token(&mut self) -> Result<Token, String> {
        self.skip_space();
        let Some(c) = self.chars.get(self.at) else {
            return Ok(Token::End);
        };
        let token = match c {
            ';' => Token::Semicolon,
            '{' => Token::Open,
            '}' => Token::Close,
            _ => return Ok(Token::Word(self.word()?)),
        };
        self.at += 1;
        Ok(token)
    }

    /// A bare or quoted word. As nginx, `\"`, `\'`, `\\`, `\t`, `\r` and `\n`
    /// are unescaped; any other backslash stays (`\.` in a regex).
    fn word(&mut self) -> Result<String, String> {
        let mut word = String::new();
        if let Some(quote @ ('"' | '\'')) = self.chars.get(self.at).copied() {
            self.at += 1;
            loop {
                match self.chars.get(self.at).copied() {
                    None => return Err("a quoted string is not closed".into()),
                    Some('\\') => {
                        let next = self.chars.get(self.at + 1).copied();
                        match next {
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some(c @ ('"' | '\'' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("a quoted string is not closed".into()),
                        }
                        self.at += 2;
                    }
                    Some(c) if c == quote => {
                        self.at += 1;
                        return Ok(word);
                    }
                    Some(c) => {
                        word.push(c);
                        self.at += 1;
                    }
                }
            }
        }
        while let Some(c) = self.chars.get(self.at).copied() {
            if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
                break;
            }
            if c == '\\' {
                if let Some(next @ ('"' | '\'' | '\\')) = self.chars.get(self.at + 1).copied() {
                    word.push(next);
                    self.at += 2;
                    continue;
                }
            }
            word.push(c);
            self.at += 1;
        }
        Ok(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_directives_blocks_quotes_and_conditions() {
        let text = r#"
            # a comment
            more_set_headers "X-Frame-Options: DENY" 'X-A: b c';
            proxy_set_header X-Forwarded-Proto https;
            if ($http_x_token != "let me in") {
                return 403 "no\"pe";
            }
            if ($host ~* ^(www\.)?old\.example$) { return 301 https://new.example$request_uri; }
        "#;
        let d = parse(text).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(d[0].args, ["X-Frame-Options: DENY", "X-A: b c"]);
        assert_eq!(d[2].name, "if");
        assert_eq!(d[2].condition, ["$http_x_token", "!=", "let me in"]);
        let inner = d[2].block.as_ref().unwrap();
        assert_eq!(inner[0].args, ["403", "no\"pe"]);
        assert!(is_access(&inner[0]));
        assert_eq!(d[3].condition, ["$host", "~*", r"^(www\.)?old\.example$"]);
    }

    #[test]
    fn refuses_what_nginx_would() {
        for bad in [
            "add_header X y",
            "if ($a) { return 200;",
            "}",
            "a 'b",
            "if $a { }",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = "location / {".repeat(20) + &"}".repeat(20);
        assert!(parse(&deep).unwrap_err().contains("nested"));
        assert_eq!(mentions_access("deny all; add_header 'x"), Some("deny"));
        assert_eq!(mentions_access("return 403"), Some("return"));
    }

    #[test]
    fn fuzzed_snippets_never_panic() {
        crate::fuzz::texts(
            &[
                "more_set_headers \"A: b\"; if ($http_a ~ ^x) { return 403; }",
                "rewrite ^/old/(.*)$ /new/$1 permanent; proxy_set_header X $host;",
                "location /x { deny all; } # c",
            ],
            crate::fuzz::iterations(5_000),
            |text| {
                let _ = parse(text);
                let _ = mentions_access(text);
            },
        );
    }
}
