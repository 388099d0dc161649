//! The circuit-breaker trip condition, in Traefik's expression language, so an
//! existing rule such as `NetworkErrorRatio() > 0.5` works unchanged:
//!
//! ```text
//! expr       := and ("||" and)*
//! and        := term ("&&" term)*
//! term       := "(" expr ")" | comparison
//! comparison := function op number
//! function   := NetworkErrorRatio() | ResponseCodeRatio(a, b, c, d)
//!             | LatencyAtQuantileMS(q) | RequestThreshold()
//! op         := > | >= | < | <= | == | !=
//! ```
//!
//! Rules come from tenants' annotations, so the parser is bounded: at most
//! `MAX_SOURCE_LEN` bytes (which also bounds how many comparisons a chain holds,
//! and so the depth of the tree `eval` and `Drop` recurse through) and at most
//! `MAX_NESTING` parentheses deep. It walks the text by character, so any
//! Unicode (a non-breaking space, say) is an error, never a panic.

use std::fmt;

use thiserror::Error;

/// Longest rule accepted; real rules are well under 200 bytes.
pub const MAX_SOURCE_LEN: usize = 1024;
/// Deepest nesting of parentheses accepted.
pub const MAX_NESTING: usize = 16;

/// What a rule reads from an endpoint's rolling window.
pub trait WindowStats {
    fn requests(&self) -> f64;
    fn network_error_ratio(&self) -> f64;
    /// Responses with a code in `[from, to)` over those in `[div_from, div_to)`.
    fn response_code_ratio(&self, from: u16, to: u16, div_from: u16, div_to: u16) -> f64;
    fn latency_at_quantile_ms(&self, quantile: f64) -> f64;
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Compare(Metric, Op, f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    NetworkErrorRatio,
    ResponseCodeRatio(u16, u16, u16, u16),
    LatencyAtQuantileMs(f64),
    RequestThreshold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid circuit-breaker expression at column {column}: {message}")]
pub struct ExprError {
    /// 1-based, so it matches what an editor shows.
    pub column: usize,
    pub message: String,
}

/// A parsed rule, with its source for logs and the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerRule {
    pub source: String,
    pub expr: Expr,
}

impl std::str::FromStr for BreakerRule {
    type Err = ExprError;

    fn from_str(value: &str) -> Result<BreakerRule, ExprError> {
        BreakerRule::parse(value)
    }
}

impl fmt::Display for BreakerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl BreakerRule {
    pub fn parse(source: &str) -> Result<BreakerRule, ExprError> {
        if source.len() > MAX_SOURCE_LEN {
            return Err(ExprError {
                column: 1,
                message: format!("longer than {MAX_SOURCE_LEN} bytes"),
            });
        }
        let mut parser = Parser {
            src: source,
            pos: 0,
            depth: 0,
        };
        let expr = parser.or()?;
        parser.skip_ws();
        if parser.pos < source.len() {
            return Err(parser.error("unexpected text after the expression"));
        }
        Ok(BreakerRule {
            source: source.trim().to_owned(),
            expr,
        })
    }

    pub fn should_trip(&self, stats: &impl WindowStats) -> bool {
        eval(&self.expr, stats)
    }
}

fn eval(expr: &Expr, stats: &impl WindowStats) -> bool {
    match expr {
        Expr::Or(a, b) => eval(a, stats) || eval(b, stats),
        Expr::And(a, b) => eval(a, stats) && eval(b, stats),
        Expr::Compare(metric, op, value) => {
            let measured = match *metric {
                Metric::NetworkErrorRatio => stats.network_error_ratio(),
                Metric::ResponseCodeRatio(a, b, c, d) => stats.response_code_ratio(a, b, c, d),
                Metric::LatencyAtQuantileMs(q) => stats.latency_at_quantile_ms(q),
                Metric::RequestThreshold => stats.requests(),
            };
            match op {
                Op::Gt => measured > *value,
                Op::Ge => measured >= *value,
                Op::Lt => measured < *value,
                Op::Le => measured <= *value,
                Op::Eq => measured == *value,
                Op::Ne => measured != *value,
            }
        }
    }
}

/// `pos` is a byte offset that only ever moves by whole characters, so every
/// `rest()` slice is on a character boundary.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    /// Parentheses open around the current term.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    fn error(&self, message: &str) -> ExprError {
        ExprError {
            column: column_at(self.src, self.pos),
            message: message.to_owned(),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.rest().chars().next().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), ExprError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{token}`")))
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.term()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, ExprError> {
        if self.eat("(") {
            if self.depth >= MAX_NESTING {
                return Err(self.error(&format!("nested deeper than {MAX_NESTING}")));
            }
            self.depth += 1;
            let inner = self.or()?;
            self.expect(")")?;
            self.depth -= 1;
            return Ok(inner);
        }
        let metric = self.function()?;
        let op = self.op()?;
        let value = self.number()?;
        Ok(Expr::Compare(metric, op, value))
    }

    fn function(&mut self) -> Result<Metric, ExprError> {
        self.skip_ws();
        let start = self.pos;
        let rest = self.rest();
        let name_len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if name.is_empty() {
            return Err(self.error("expected a function such as NetworkErrorRatio()"));
        }
        self.pos += name_len;
        self.expect("(")?;
        let mut args = Vec::new();
        if !self.eat(")") {
            loop {
                args.push(self.number()?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        let arity = |n: usize, pos: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(ExprError {
                    column: column_at(self.src, pos),
                    message: format!("{name} takes {n} argument(s), got {}", args.len()),
                })
            }
        };
        let code = |v: f64| v.clamp(0.0, 1000.0) as u16;
        match name {
            "NetworkErrorRatio" => arity(0, start).map(|()| Metric::NetworkErrorRatio),
            "RequestThreshold" => arity(0, start).map(|()| Metric::RequestThreshold),
            "LatencyAtQuantileMS" => arity(1, start).map(|()| Metric::LatencyAtQuantileMs(args[0])),
            "ResponseCodeRatio" => arity(4, start)
                .map(|()| Metric::ResponseCodeRatio(code(args[0]), code(args[1]), code(args[2]), code(args[3]))),
            _ => Err(ExprError {
                column: column_at(self.src, start),
                message: format!(
                    "unknown function {name}: expected NetworkErrorRatio, ResponseCodeRatio, LatencyAtQuantileMS or RequestThreshold"
                ),
            }),
        }
    }

    fn op(&mut self) -> Result<Op, ExprError> {
        for (token, op) in [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ] {
            if self.eat(token) {
                return Ok(op);
            }
        }
        Err(self.error("expected a comparison (>, >=, <, <=, ==, !=)"))
    }

    fn number(&mut self) -> Result<f64, ExprError> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(rest.len());
        match rest[..len].parse::<f64>() {
            Ok(value) if len > 0 => {
                self.pos += len;
                Ok(value)
            }
            _ => Err(self.error("expected a number")),
        }
    }
}

/// The 1-based column, in characters, of byte offset `pos`.
fn column_at(src: &str, pos: usize) -> usize {
    src.get(..pos).map_or(pos, |before| before.chars().count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        requests: f64,
        network: f64,
        codes_5xx: f64,
        p50: f64,
    }

    impl WindowStats for Fixed {
        fn requests(&self) -> f64 {
            self.requests
        }
        fn network_error_ratio(&self) -> f64 {
            self.network
        }
        fn response_code_ratio(&self, from: u16, _to: u16, _: u16, _: u16) -> f64 {
            if from == 500 {
                self.codes_5xx
            } else {
                0.0
            }
        }
        fn latency_at_quantile_ms(&self, _q: f64) -> f64 {
            self.p50
        }
    }

    #[test]
    fn traefik_rules_parse_and_evaluate() {
        let stats = Fixed {
            requests: 20.0,
            network: 0.6,
            codes_5xx: 0.1,
            p50: 250.0,
        };
        let cases = [
            ("NetworkErrorRatio() > 0.5", true),
            ("NetworkErrorRatio() > 0.5 && RequestThreshold() >= 10", true),
            ("NetworkErrorRatio() > 0.5 && RequestThreshold() >= 30", false),
            ("ResponseCodeRatio(500, 600, 0, 600) > 0.25", false),
            ("ResponseCodeRatio(500, 600, 0, 600) > 0.25 || LatencyAtQuantileMS(50.0) > 100", true),
            ("(NetworkErrorRatio() < 0.1 || RequestThreshold() == 20) && LatencyAtQuantileMS(99) != 0", true),
            ("  RequestThreshold()<=20  ", true),
        ];
        for (source, want) in cases {
            let rule = BreakerRule::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(rule.should_trip(&stats), want, "{source}");
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        let cases = [
            ("NetworkErrorRatio() >", 22, "expected a number"),
            (
                "NetworkErrorRate() > 0.5",
                1,
                "unknown function NetworkErrorRate",
            ),
            ("ResponseCodeRatio(500, 600) > 0.5", 1, "takes 4 argument"),
            ("NetworkErrorRatio() > 0.5 &&", 29, "expected a function"),
            ("(NetworkErrorRatio() > 0.5", 27, "expected `)`"),
            ("NetworkErrorRatio() 0.5", 21, "expected a comparison"),
            ("NetworkErrorRatio() > 0.5 junk", 27, "unexpected text"),
        ];
        for (source, column, message) in cases {
            let err = BreakerRule::parse(source).unwrap_err();
            assert_eq!(err.column, column, "{source}: {err}");
            assert!(err.message.contains(message), "{source}: {err}");
        }
    }

    /// Unbounded nesting once overflowed the stack and a non-ASCII space
    /// panicked on a character boundary; both are errors now.
    #[test]
    fn hostile_rules_are_errors() {
        let deep = "(".repeat(100_000) + "NetworkErrorRatio() > 0.5" + &")".repeat(100_000);
        assert!(BreakerRule::parse(&deep)
            .unwrap_err()
            .message
            .contains("longer"));
        let nested =
            "(".repeat(MAX_NESTING + 1) + "RequestThreshold() > 1" + &")".repeat(MAX_NESTING + 1);
        let err = BreakerRule::parse(&nested).unwrap_err();
        assert!(err.message.contains("nested deeper"), "{err}");
        let fine = "(".repeat(MAX_NESTING) + "RequestThreshold() > 1" + &")".repeat(MAX_NESTING);
        assert!(BreakerRule::parse(&fine).is_ok());
        let err = BreakerRule::parse("NetworkErrorRatio()\u{a0}> 0.5 && é").unwrap_err();
        assert_eq!(err.column, 30, "{err}");
        let err = BreakerRule::parse("é > 1").unwrap_err();
        assert_eq!(err.column, 1, "{err}");
    }

    #[test]
    fn fuzzed_rules_never_panic() {
        let stats = Fixed {
            requests: 1.0,
            network: 0.5,
            codes_5xx: 0.5,
            p50: 10.0,
        };
        crate::fuzz::texts(
            &[
                "NetworkErrorRatio() > 0.5",
                "(ResponseCodeRatio(500, 600, 0, 600) > 0.25 || LatencyAtQuantileMS(50.0) > 100) && RequestThreshold() >= 10",
            ],
            crate::fuzz::iterations(20_000),
            |source| {
                if let Ok(rule) = BreakerRule::parse(source) {
                    assert!(rule.source.len() <= MAX_SOURCE_LEN);
                    rule.should_trip(&stats);
                }
            },
        );
    }
}
