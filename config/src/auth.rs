//! How the broker asks an nsqd-style auth server about an AUTH secret.

use crate::tier::ParseNameError;

/// nsqd's `--auth-http-request-method`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthHttpRequestMethod {
    /// `GET /auth?remote_ip=&tls=&secret=&common_name=` (nsqd's default).
    #[default]
    Get,
    /// The same parameters as a form body, so the secret stays out of URLs
    /// and the auth server's access log.
    Post,
}

impl AuthHttpRequestMethod {
    pub const NAMES: &'static [&'static str] = &["get", "post"];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthHttpRequestMethod::Get => "get",
            AuthHttpRequestMethod::Post => "post",
        }
    }
}

impl std::fmt::Display for AuthHttpRequestMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AuthHttpRequestMethod {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "get" => Ok(AuthHttpRequestMethod::Get),
            "post" => Ok(AuthHttpRequestMethod::Post),
            _ => Err(ParseNameError::new(
                "auth request method",
                s,
                AuthHttpRequestMethod::NAMES,
            )),
        }
    }
}
