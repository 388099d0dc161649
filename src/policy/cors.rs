//! `enable-cors`, as ingress-nginx's CORS template: a request whose
//! `Origin` matches `cors-allow-origin` (or every request, with `*`) gets
//! the `Access-Control-*` headers on its answer, and an `OPTIONS` one is
//! answered here with a 204 (the preflight), before redirects and access
//! checks, as nginx's rewrite phase does.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use regex::{Regex, RegexBuilder};

pub const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
pub const DEFAULT_HEADERS: &str =
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
pub const DEFAULT_MAX_AGE: u64 = 1_728_000;

/// Which origins get CORS headers.
#[derive(Debug, Clone)]
pub enum Origins {
    /// `*`: every request, with `Access-Control-Allow-Origin: *`.
    Any,
    /// ingress-nginx's `^(a|b)$`, ignoring case; a `*` in an origin stands
    /// for one label (`https://*.example.com`).
    Listed(Regex),
}

#[derive(Debug, Clone)]
pub struct Cors {
    pub origins: Origins,
    /// The headers every CORS answer carries, `Access-Control-Allow-Origin`
    /// aside (it is the request's origin).
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The same settings (a table swap compares policies).
impl PartialEq for Cors {
    fn eq(&self, other: &Self) -> bool {
        let pattern = |o: &Origins| match o {
            Origins::Any => None,
            Origins::Listed(r) => Some(r.as_str().to_owned()),
        };
        pattern(&self.origins) == pattern(&other.origins) && self.headers == other.headers
    }
}

/// The settings as the annotations give them, checked.
pub struct CorsSpec<'a> {
    /// `None`: `*`.
    pub origins: Option<Vec<&'a str>>,
    pub methods: &'a str,
    pub allow_headers: &'a str,
    pub expose_headers: &'a str,
    pub credentials: bool,
    pub max_age: u64,
}

impl Cors {
    pub fn new(spec: &CorsSpec<'_>) -> Result<Cors, String> {
        let origins = match &spec.origins {
            None => Origins::Any,
            Some(list) => {
                let alternatives: Vec<String> = list
                    .iter()
                    .map(|origin| {
                        format!(
                            "({})",
                            regex::escape(origin).replacen("\\*", "[A-Za-z0-9\\-]+", 1)
                        )
                    })
                    .collect();
                let regex = RegexBuilder::new(&format!("^({})$", alternatives.join("|")))
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| e.to_string())?;
                Origins::Listed(regex)
            }
        };
        let value = |text: &str| {
            HeaderValue::try_from(text).map_err(|_| format!("{text:?} is not a header value"))
        };
        let mut headers = Vec::new();
        if spec.credentials {
            headers.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        headers.push((header::ACCESS_CONTROL_ALLOW_METHODS, value(spec.methods)?));
        headers.push((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            value(spec.allow_headers)?,
        ));
        if !spec.expose_headers.is_empty() {
            headers.push((
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                value(spec.expose_headers)?,
            ));
        }
        headers.push((
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(spec.max_age),
        ));
        Ok(Cors { origins, headers })
    }

    /// The `Access-Control-Allow-Origin` of this request, when CORS applies.
    pub fn allow_origin(&self, request: &HeaderMap) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::Listed(regex) => {
                let origin = request.get(header::ORIGIN)?;
                regex
                    .is_match(origin.to_str().ok()?)
                    .then(|| origin.clone())
            }
        }
    }

    /// Every header a CORS answer carries.
    pub fn headers(
        &self,
        allow_origin: HeaderValue,
    ) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        std::iter::once((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin))
            .chain(self.headers.iter().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(origins: Option<Vec<&'a str>>) -> CorsSpec<'a> {
        CorsSpec {
            origins,
            methods: DEFAULT_METHODS,
            allow_headers: DEFAULT_HEADERS,
            expose_headers: "",
            credentials: true,
            max_age: DEFAULT_MAX_AGE,
        }
    }

    fn origin(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, value.parse().unwrap());
        headers
    }

    #[test]
    fn origins_match_as_ingress_nginx_writes_them() {
        let cors = Cors::new(&spec(Some(vec![
            "https://app.example.com",
            "https://*.example.org:8443",
        ])))
        .unwrap();
        assert_eq!(
            cors.allow_origin(&origin("https://app.example.com"))
                .unwrap(),
            "https://app.example.com"
        );
        assert!(
            cors.allow_origin(&origin("HTTPS://APP.EXAMPLE.COM"))
                .is_some(),
            "ignoring case"
        );
        assert!(cors
            .allow_origin(&origin("https://a.example.org:8443"))
            .is_some());
        assert!(
            cors.allow_origin(&origin("https://a.b.example.org:8443"))
                .is_none(),
            "one label"
        );
        assert!(
            cors.allow_origin(&origin("https://app.example.com.evil"))
                .is_none(),
            "anchored"
        );
        assert!(
            cors.allow_origin(&origin("https://appXexample.com"))
                .is_none(),
            "dots are dots"
        );
        assert!(cors.allow_origin(&HeaderMap::new()).is_none());
        let any = Cors::new(&spec(None)).unwrap();
        assert_eq!(any.allow_origin(&HeaderMap::new()).unwrap(), "*");
        let names: Vec<_> = any
            .headers(HeaderValue::from_static("*"))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
    }
}
