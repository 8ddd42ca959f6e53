//! TLS settings that take a name: the client-certificate policy and the
//! lowest protocol version, spelled as nsqd spells them.

use crate::tier::ParseNameError;

/// nsqd's `--tls-client-auth-policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsClientAuthPolicy {
    /// No client certificate is asked for (nsqd's default).
    #[default]
    None,
    /// A client certificate is required but not checked against a CA.
    Require,
    /// A client certificate is required and must chain to `tls_root_ca_file`.
    RequireVerify,
}

impl TlsClientAuthPolicy {
    pub const NAMES: &'static [&'static str] = &["none", "require", "require-verify"];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsClientAuthPolicy::None => "none",
            TlsClientAuthPolicy::Require => "require",
            TlsClientAuthPolicy::RequireVerify => "require-verify",
        }
    }
}

impl std::fmt::Display for TlsClientAuthPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TlsClientAuthPolicy {
    type Err = ParseNameError;

    /// `none` (or empty, as nsqd's unset flag), `require`, `require-verify`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(TlsClientAuthPolicy::None),
            "require" => Ok(TlsClientAuthPolicy::Require),
            "require-verify" => Ok(TlsClientAuthPolicy::RequireVerify),
            _ => Err(ParseNameError::new(
                "TLS client auth policy",
                s,
                TlsClientAuthPolicy::NAMES,
            )),
        }
    }
}

/// The lowest TLS version accepted. rustls speaks TLS 1.2 and 1.3 only, so
/// nsqd's older choices (`ssl3.0`, `tls1.0`, `tls1.1`) are accepted and mean
/// TLS 1.2: a config written for nsqd still loads, and nothing weaker than
/// TLS 1.2 is ever negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl TlsMinVersion {
    pub const NAMES: &'static [&'static str] = &["tls1.2", "tls1.3"];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMinVersion::Tls12 => "tls1.2",
            TlsMinVersion::Tls13 => "tls1.3",
        }
    }
}

impl std::fmt::Display for TlsMinVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TlsMinVersion {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ssl3.0" | "tls1.0" | "tls1.1" | "tls1.2" => Ok(TlsMinVersion::Tls12),
            "tls1.3" => Ok(TlsMinVersion::Tls13),
            _ => Err(ParseNameError::new(
                "TLS version",
                s,
                &["ssl3.0", "tls1.0", "tls1.1", "tls1.2", "tls1.3"],
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_nsqd_spells_them() {
        for policy in [
            TlsClientAuthPolicy::None,
            TlsClientAuthPolicy::Require,
            TlsClientAuthPolicy::RequireVerify,
        ] {
            assert_eq!(policy.as_str().parse::<TlsClientAuthPolicy>(), Ok(policy));
        }
        assert_eq!(
            "".parse::<TlsClientAuthPolicy>(),
            Ok(TlsClientAuthPolicy::None)
        );
        assert!("verify".parse::<TlsClientAuthPolicy>().is_err());
        assert_eq!("tls1.0".parse::<TlsMinVersion>(), Ok(TlsMinVersion::Tls12));
        assert_eq!("TLS1.3".parse::<TlsMinVersion>(), Ok(TlsMinVersion::Tls13));
        let err = "tls2".parse::<TlsMinVersion>().expect_err("not a version");
        assert!(err.to_string().contains("tls1.3"), "{err}");
    }
}
