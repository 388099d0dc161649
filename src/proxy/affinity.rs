//! Cookie affinity in the pipeline: what the request's cookie says before
//! the endpoint is picked, and the `Set-Cookie` on the way back
//! (`policy::affinity` decides both).

use std::time::SystemTime;

use http::header::{SET_COOKIE, USER_AGENT};
use http::{Request, Response};

use crate::policy::affinity::{backend_tag, same_site_none_compatible, Affinity, Answered, Sticky};
use crate::routing::Backend;

/// What is kept of the request until its answer: small, and boxed, so a
/// request without affinity carries one pointer more.
pub struct StickyRequest {
    sticky: Sticky,
    backend: u64,
    samesite_none_ok: bool,
}

impl StickyRequest {
    pub fn of<B>(
        affinity: &Affinity,
        request: &Request<B>,
        backend: &Backend,
    ) -> Box<StickyRequest> {
        let headers = request.headers();
        let tag = backend_tag(&backend.name);
        let user_agent = headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
        Box::new(StickyRequest {
            sticky: affinity.sticky(headers, tag, fastrand::u64(..)),
            backend: tag,
            samesite_none_ok: !affinity.conditional_samesite_none
                || same_site_none_compatible(user_agent),
        })
    }

    /// The key on the backend's ring.
    pub fn key(&self) -> u64 {
        self.sticky.key
    }

    /// Adds the cookie to the answer when it must be (re)set.
    pub fn answer<B>(
        &self,
        affinity: &Affinity,
        response: &mut Response<B>,
        endpoint: std::net::SocketAddr,
        attempts: u32,
        https: bool,
    ) {
        let answered = Answered {
            endpoint,
            retried: attempts > 1,
            https,
            samesite_none_ok: self.samesite_none_ok,
            now: SystemTime::now(),
        };
        if let Some(cookie) = affinity.set_cookie(self.sticky, self.backend, &answered) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
    }
}
