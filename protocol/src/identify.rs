//! IDENTIFY's request JSON (what a client says) and the negotiated reply.
//!
//! Only parsing and serialising live here; range checks against the server's
//! limits belong to the broker, which knows them.

use serde::{Deserialize, Serialize};

/// What clients send. Unknown fields (e.g. the deprecated `short_id` and
/// `long_id`) are ignored, as Go's `json.Unmarshal` does. Numbers keep nsqd's
/// sentinel meanings: `-1` disables, `0` means the server default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentifyRequest {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub feature_negotiation: bool,
    pub heartbeat_interval: i64,
    pub output_buffer_size: i64,
    pub output_buffer_timeout: i64,
    pub tls_v1: bool,
    pub snappy: bool,
    pub deflate: bool,
    pub deflate_level: i64,
    pub sample_rate: i64,
    pub msg_timeout: i64,
}

/// The 13 fields nsqd answers with when `feature_negotiation` is set; tokio-nsq
/// rejects a reply missing any of them, and wants `max_rdy_count` to fit a u16.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyResponse {
    pub max_rdy_count: u16,
    pub version: String,
    /// ms
    pub max_msg_timeout: u64,
    /// ms
    pub msg_timeout: u64,
    pub tls_v1: bool,
    pub deflate: bool,
    pub deflate_level: i64,
    pub max_deflate_level: i64,
    pub snappy: bool,
    pub sample_rate: i64,
    pub auth_required: bool,
    pub output_buffer_size: i64,
    /// ms
    pub output_buffer_timeout: i64,
}

impl IdentifyRequest {
    /// # Errors
    /// `E_BAD_BODY` with nsqd's text when the body is not a JSON object of the right types.
    pub fn from_json(body: &[u8]) -> Result<IdentifyRequest, crate::ProtocolError> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
            return Err(decode_failed());
        };
        let mut req = IdentifyRequest::default();
        for (key, value) in &fields {
            req.set(key, value).ok_or_else(decode_failed)?;
        }
        Ok(req)
    }

    /// Applies one JSON member the way Go's `json.Unmarshal` would: keys match
    /// field names exactly or ASCII-case-insensitively, unknown keys and `null`
    /// values leave the request unchanged, a value of the wrong type fails.
    /// `None` means "wrong type".
    fn set(&mut self, key: &str, value: &serde_json::Value) -> Option<()> {
        use serde_json::Value;

        if value.is_null() {
            return Some(());
        }
        let string = |field: &mut String| {
            *field = value.as_str()?.to_owned();
            Some(())
        };
        let boolean = |field: &mut bool| {
            *field = value.as_bool()?;
            Some(())
        };
        // Go rejects a fraction or exponent for an integer field, and so does `as_i64`.
        let integer = |field: &mut i64| {
            *field = match value {
                Value::Number(n) => n.as_i64()?,
                _ => return None,
            };
            Some(())
        };
        let field = FIELDS
            .iter()
            .find(|f| **f == key)
            .or_else(|| FIELDS.iter().find(|f| f.eq_ignore_ascii_case(key)));
        match field.copied() {
            Some("client_id") => string(&mut self.client_id),
            Some("hostname") => string(&mut self.hostname),
            Some("user_agent") => string(&mut self.user_agent),
            Some("feature_negotiation") => boolean(&mut self.feature_negotiation),
            Some("heartbeat_interval") => integer(&mut self.heartbeat_interval),
            Some("output_buffer_size") => integer(&mut self.output_buffer_size),
            Some("output_buffer_timeout") => integer(&mut self.output_buffer_timeout),
            Some("tls_v1") => boolean(&mut self.tls_v1),
            Some("snappy") => boolean(&mut self.snappy),
            Some("deflate") => boolean(&mut self.deflate),
            Some("deflate_level") => integer(&mut self.deflate_level),
            Some("sample_rate") => integer(&mut self.sample_rate),
            Some("msg_timeout") => integer(&mut self.msg_timeout),
            _ => Some(()),
        }
    }
}

/// The JSON names `IdentifyRequest::set` knows.
const FIELDS: [&str; 13] = [
    "client_id",
    "hostname",
    "user_agent",
    "feature_negotiation",
    "heartbeat_interval",
    "output_buffer_size",
    "output_buffer_timeout",
    "tls_v1",
    "snappy",
    "deflate",
    "deflate_level",
    "sample_rate",
    "msg_timeout",
];

fn decode_failed() -> crate::ProtocolError {
    crate::ProtocolError::new(
        crate::ErrorCode::BadBody,
        "IDENTIFY failed to decode JSON body",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn decode(json: &str) -> Result<IdentifyRequest, crate::ProtocolError> {
        IdentifyRequest::from_json(json.as_bytes())
    }

    #[test]
    fn parses_what_go_nsq_sends() {
        let json = r#"{"client_id":"c","hostname":"h.example","user_agent":"go-nsq/1.1.0","short_id":"c",
            "long_id":"h.example","tls_v1":false,"deflate":true,"deflate_level":6,"snappy":false,
            "feature_negotiation":true,"heartbeat_interval":30000,"sample_rate":0,
            "output_buffer_size":16384,"output_buffer_timeout":250,"msg_timeout":0,
            "topology_region":"","topology_zone":""}"#;
        let req = decode(json).unwrap();
        assert_eq!(
            req,
            IdentifyRequest {
                client_id: "c".into(),
                hostname: "h.example".into(),
                user_agent: "go-nsq/1.1.0".into(),
                feature_negotiation: true,
                heartbeat_interval: 30000,
                output_buffer_size: 16384,
                output_buffer_timeout: 250,
                tls_v1: false,
                snappy: false,
                deflate: true,
                deflate_level: 6,
                sample_rate: 0,
                msg_timeout: 0,
            }
        );
    }

    #[test]
    fn missing_fields_default_and_negatives_are_kept() {
        let req = decode(r#"{"heartbeat_interval":-1,"output_buffer_size":-1}"#).unwrap();
        assert_eq!(req.heartbeat_interval, -1);
        assert_eq!(req.output_buffer_size, -1);
        assert_eq!(
            req,
            IdentifyRequest {
                heartbeat_interval: -1,
                output_buffer_size: -1,
                ..Default::default()
            }
        );
        assert_eq!(decode("{}").unwrap(), IdentifyRequest::default());
    }

    #[test]
    fn keys_match_case_insensitively_like_go() {
        let req = decode(r#"{"Feature_Negotiation":true,"HOSTNAME":"x"}"#).unwrap();
        assert!(req.feature_negotiation);
        assert_eq!(req.hostname, "x");
    }

    #[test]
    fn null_members_leave_defaults() {
        let req = decode(r#"{"client_id":null,"snappy":null,"msg_timeout":null}"#).unwrap();
        assert_eq!(req, IdentifyRequest::default());
    }

    #[test]
    fn rejects_non_objects_bad_json_and_wrong_types() {
        for json in [
            "",
            "[]",
            "null",
            "1",
            "\"x\"",
            "{",
            "{\"client_id\":1}",
            "{\"snappy\":\"true\"}",
            "{\"snappy\":1}",
            "{\"heartbeat_interval\":1.5}",
            "{\"heartbeat_interval\":1e3}",
            "{\"heartbeat_interval\":\"1000\"}",
            "{\"msg_timeout\":18446744073709551615}",
            "{} trailing",
        ] {
            let err = decode(json).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadBody, "{json}");
            assert_eq!(err.description, "IDENTIFY failed to decode JSON body");
        }
    }

    #[test]
    fn serialised_request_parses_back() {
        let req = IdentifyRequest {
            client_id: "a\"b".into(),
            deflate_level: 3,
            sample_rate: 50,
            ..Default::default()
        };
        let json = serde_json::to_vec(&req).unwrap();
        assert_eq!(IdentifyRequest::from_json(&json).unwrap(), req);
    }

    #[test]
    fn response_has_the_thirteen_fields() {
        let resp = IdentifyResponse {
            max_rdy_count: 2500,
            version: "1.3.0".into(),
            max_msg_timeout: 900_000,
            msg_timeout: 60_000,
            tls_v1: false,
            deflate: false,
            deflate_level: 6,
            max_deflate_level: 6,
            snappy: true,
            sample_rate: 0,
            auth_required: false,
            output_buffer_size: 16384,
            output_buffer_timeout: 250,
        };
        let value = serde_json::to_value(&resp).unwrap();
        assert_eq!(value.as_object().unwrap().len(), 13);
        assert_eq!(value["max_rdy_count"], 2500);
        assert_eq!(
            serde_json::from_value::<IdentifyResponse>(value).unwrap(),
            resp
        );
    }
}
