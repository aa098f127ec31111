//! Routing on the path exactly as API Gateway received it (`rawPath`), byte for byte. Nothing is
//! decoded or normalised: `%2e%2e`, `//`, a trailing `/` or any other spelling of a route is not
//! that route, and answers 404. (A router that normalised would let `/webhooks/incode/%2e%2e/idnow`
//! reach the IDnow handler.)

use crate::provider::incode::{self, TypeHint};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Incode(TypeHint<'a>),
    Idnow,
    Token,
}

impl Route<'_> {
    /// A fixed name for logs (the path itself is client input).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Incode(_) => "incode",
            Route::Idnow => "idnow",
            Route::Token => "token",
        }
    }
}

/// The documented routes: `/webhooks/incode`, `/webhooks/incode/{type}` (`{type}`: 1 to 64 of
/// `a-z 0-9 - _`), `/webhooks/idnow`, `/oauth/token`. Anything else is `None` (404).
pub fn route(raw_path: &str) -> Option<Route<'_>> {
    match raw_path {
        "/webhooks/incode" => Some(Route::Incode(TypeHint::None)),
        "/webhooks/idnow" => Some(Route::Idnow),
        "/oauth/token" => Some(Route::Token),
        _ => raw_path
            .strip_prefix("/webhooks/incode/")
            .filter(|slug| incode::is_valid_slug(slug))
            .map(|slug| Route::Incode(TypeHint::Path(slug))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_documented_paths_route() {
        assert_eq!(route("/webhooks/idnow"), Some(Route::Idnow));
        assert_eq!(route("/oauth/token"), Some(Route::Token));
        assert_eq!(
            route("/webhooks/incode"),
            Some(Route::Incode(TypeHint::None))
        );
        assert_eq!(
            route("/webhooks/incode/onboarding-status"),
            Some(Route::Incode(TypeHint::Path("onboarding-status")))
        );
        for path in [
            "/webhooks/incode/%2e%2e/idnow",
            "/webhooks/incode/../idnow",
            "/webhooks/incode/./onboarding-status",
            "/webhooks//idnow",
            "//webhooks/idnow",
            "/webhooks/idnow/",
            "/webhooks/incode/",
            "/oauth/token/",
            "/webhooks/%69dnow",
            "/WEBHOOKS/idnow",
            "/webhooks/idnow?x=1",
            "/webhooks/idnow;x",
            "/webhooks/incode/onboarding-status/",
            "/webhooks/incode/a/b",
            "/webhooks/incode/Onboarding",
            "",
            "/",
            "webhooks/idnow",
        ] {
            assert_eq!(route(path), None, "{path:?}");
        }
    }
}
