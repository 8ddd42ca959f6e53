//! NSQ error codes and the one error type the codec returns.

use std::fmt;

/// Every error code nsqd puts on the wire (`internal/protocol/errors.go`, `nsqd/protocol_v2.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Invalid,
    BadProtocol,
    BadBody,
    BadTopic,
    BadChannel,
    BadMessage,
    PubFailed,
    MpubFailed,
    DpubFailed,
    FinFailed,
    ReqFailed,
    TouchFailed,
    SubFailed,
    IdentifyFailed,
    AuthFirst,
    AuthFailed,
    AuthDisabled,
    AuthError,
    Unauthorized,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::Invalid,
        ErrorCode::BadProtocol,
        ErrorCode::BadBody,
        ErrorCode::BadTopic,
        ErrorCode::BadChannel,
        ErrorCode::BadMessage,
        ErrorCode::PubFailed,
        ErrorCode::MpubFailed,
        ErrorCode::DpubFailed,
        ErrorCode::FinFailed,
        ErrorCode::ReqFailed,
        ErrorCode::TouchFailed,
        ErrorCode::SubFailed,
        ErrorCode::IdentifyFailed,
        ErrorCode::AuthFirst,
        ErrorCode::AuthFailed,
        ErrorCode::AuthDisabled,
        ErrorCode::AuthError,
        ErrorCode::Unauthorized,
    ];

    /// The code exactly as it appears on the wire, e.g. `E_BAD_TOPIC`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "E_INVALID",
            ErrorCode::BadProtocol => "E_BAD_PROTOCOL",
            ErrorCode::BadBody => "E_BAD_BODY",
            ErrorCode::BadTopic => "E_BAD_TOPIC",
            ErrorCode::BadChannel => "E_BAD_CHANNEL",
            ErrorCode::BadMessage => "E_BAD_MESSAGE",
            ErrorCode::PubFailed => "E_PUB_FAILED",
            ErrorCode::MpubFailed => "E_MPUB_FAILED",
            ErrorCode::DpubFailed => "E_DPUB_FAILED",
            ErrorCode::FinFailed => "E_FIN_FAILED",
            ErrorCode::ReqFailed => "E_REQ_FAILED",
            ErrorCode::TouchFailed => "E_TOUCH_FAILED",
            ErrorCode::SubFailed => "E_SUB_FAILED",
            ErrorCode::IdentifyFailed => "E_IDENTIFY_FAILED",
            ErrorCode::AuthFirst => "E_AUTH_FIRST",
            ErrorCode::AuthFailed => "E_AUTH_FAILED",
            ErrorCode::AuthDisabled => "E_AUTH_DISABLED",
            ErrorCode::AuthError => "E_AUTH_ERROR",
            ErrorCode::Unauthorized => "E_UNAUTHORIZED",
        }
    }

    /// Whether nsqd closes the connection after sending this error. Only
    /// `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED` leave it open.
    pub fn is_fatal(self) -> bool {
        !matches!(
            self,
            ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed
        )
    }

    /// Parses a wire code back (client side).
    pub fn from_wire(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error: the code nsqd would send and its description. Sent on the
/// wire as `"<CODE> <description>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {description}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub description: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        ProtocolError {
            code,
            description: description.into(),
        }
    }

    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert!(code.as_str().starts_with("E_"));
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!(ErrorCode::from_wire("E_NOPE"), None);
        assert_eq!(ErrorCode::from_wire("e_invalid"), None);
    }

    #[test]
    fn codes_are_distinct() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn only_fin_req_touch_failures_keep_the_connection() {
        let non_fatal: Vec<ErrorCode> = ErrorCode::ALL
            .into_iter()
            .filter(|c| !c.is_fatal())
            .collect();
        assert_eq!(
            non_fatal,
            [
                ErrorCode::FinFailed,
                ErrorCode::ReqFailed,
                ErrorCode::TouchFailed
            ]
        );
    }

    #[test]
    fn display_is_code_space_description() {
        let err = ProtocolError::new(ErrorCode::BadTopic, "PUB topic name \"x y\" is not valid");
        assert_eq!(
            err.to_string(),
            "E_BAD_TOPIC PUB topic name \"x y\" is not valid"
        );
        assert!(err.is_fatal());
        assert!(!ProtocolError::new(ErrorCode::FinFailed, "x").is_fatal());
    }
}
