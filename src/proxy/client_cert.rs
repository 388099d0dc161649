//! `auth-tls-*` per request: the connection's client certificate, judged
//! once after its handshake (`tls`), against the host's settings. nginx's
//! answers: 400 without a required certificate or with one that fails,
//! (or a 302 to `auth-tls-error-page`), 403 when `auth-tls-match-cn` does
//! not match, and 421 when the handshake was made for a host with other
//! settings (a client that named one host in SNI and another in `Host`,
//! or an HTTP/2 connection reused across hosts).

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::conn::ConnInfo;
use super::filters::{forbidden, plain};
use crate::policy::client_cert::{ClientCa, Verified, VerifyClient};
use crate::routing::Route;

const VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
const SUBJECT: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
const ISSUER: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
const CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// Removes a client's own `ssl-client-*` headers: only sluice says what a
/// certificate named.
pub(super) fn remove_forged(headers: &mut http::HeaderMap) {
    for name in [VERIFY, SUBJECT, ISSUER, CERT] {
        headers.remove(name);
    }
}

/// The answer when the request is refused; else the request goes on with
/// nginx's `ssl-client-*` headers, never the client's own.
pub(super) fn check(
    ca: &ClientCa,
    route: &Route,
    request: &mut Request<Incoming>,
    conn: &ConnInfo,
) -> Option<Response<ResponseBody>> {
    let headers = request.headers_mut();
    remove_forged(headers);
    if ca.verify == VerifyClient::Off {
        headers.insert(VERIFY, HeaderValue::from_static("NONE"));
        return match_cn(ca, "");
    }
    if !conn.tls {
        // nginx judges certificates on TLS connections only, and lets
        // plain HTTP through; sluice does not, where one is required,
        // unless the request is about to be redirected to HTTPS.
        if ca.verify == VerifyClient::On && !route.filters.https_redirect() {
            return Some(refused(ca, "No required SSL certificate was sent"));
        }
        return match_cn(ca, "");
    }
    let Some(peer) = conn.client_cert.get().filter(|p| p.ca.same(ca)) else {
        return Some(misdirected());
    };
    match (&peer.verified, ca.verify) {
        (Verified::None, VerifyClient::On) => {
            return Some(refused(ca, "No required SSL certificate was sent"))
        }
        (Verified::Failed(_), VerifyClient::On | VerifyClient::Optional) => {
            return Some(refused(ca, "The SSL certificate error"))
        }
        _ => {}
    }
    if let Some(refused) = match_cn(ca, &peer.subject) {
        return Some(refused);
    }
    // Made once for the connection: a request costs clones, not formatting.
    headers.insert(VERIFY, peer.verify_header().clone());
    for (name, value) in [
        (SUBJECT, &peer.subject_header),
        (ISSUER, &peer.issuer_header),
    ] {
        if let Some(value) = value {
            headers.insert(name, value.clone());
        }
    }
    if let Some(cert) = peer.escaped.as_ref().filter(|_| ca.pass_certificate) {
        headers.insert(CERT, cert.clone());
    }
    None
}

/// `auth-tls-match-cn`, against the subject (empty without a certificate).
fn match_cn(ca: &ClientCa, subject: &str) -> Option<Response<ResponseBody>> {
    let regex = ca.match_cn.as_ref()?;
    (!regex.is_match(subject)).then(|| {
        let mut response = forbidden();
        *response.body_mut() = ResponseBody::from(bytes::Bytes::from_static(
            b"client certificate unauthorized",
        ));
        response
    })
}

/// nginx's 495 and 496, which it answers as 400 (or sends to the error page).
fn refused(ca: &ClientCa, why: &'static str) -> Response<ResponseBody> {
    if let Some(page) = &ca.error_page {
        let mut response = plain(StatusCode::FOUND);
        response
            .headers_mut()
            .insert(header::LOCATION, page.clone());
        return response;
    }
    let mut response = plain(StatusCode::BAD_REQUEST);
    *response.body_mut() =
        ResponseBody::from(bytes::Bytes::from(format!("400 Bad Request\n{why}\n")));
    response
}

/// The handshake was made for another host's settings: the client should
/// connect again, naming this host.
fn misdirected() -> Response<ResponseBody> {
    plain(StatusCode::MISDIRECTED_REQUEST)
}
