//! `IDENTIFY`: the client says who it is and what it wants; the broker checks
//! each value against its bounds, answers (JSON when feature negotiation is on)
//! and then switches the stream to snappy or deflate, sending a compressed `OK`.

use std::time::Duration;

use triage_protocol::compress::{deflate_pair, snappy_pair};
use triage_protocol::{frame, ErrorCode, IdentifyRequest, IdentifyResponse, ProtocolError};

use super::wrong_state;
use crate::client::ClientIdentity;
use crate::tcp::session::{
    ClientState, Session, Settings, DEFAULT_OUTPUT_BUFFER_SIZE, DEFAULT_OUTPUT_BUFFER_TIMEOUT,
};

/// nsqd's default when the client asks for deflate without a level.
const DEFAULT_DEFLATE_LEVEL: i64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Snappy,
    Deflate(u32),
}

pub(super) async fn apply(
    session: &mut Session,
    request: IdentifyRequest,
) -> Result<(), ProtocolError> {
    if session.state != ClientState::Init || session.identified {
        return Err(wrong_state("IDENTIFY"));
    }
    let config = session.broker.config.clone();
    let settings = negotiate_settings(&request, &config, &session.settings)?;

    // As nsqd: without feature negotiation the client gets `OK` and nothing is upgraded.
    let negotiate = request.feature_negotiation;
    let tls = negotiate && request.tls_v1 && session.broker.tls.is_some();
    let deflate = negotiate && request.deflate && config.deflate;
    let snappy = negotiate && request.snappy && config.snappy;
    if deflate && snappy {
        return Err(ProtocolError::new(
            ErrorCode::IdentifyFailed,
            "cannot enable both deflate and snappy compression",
        ));
    }
    let wanted_level = if deflate && request.deflate_level > 0 {
        request.deflate_level
    } else {
        DEFAULT_DEFLATE_LEVEL
    };
    // Reported even when deflate is off, as nsqd does.
    let deflate_level = wanted_level.min(config.max_deflate_level as i64).max(1);
    let compression = if deflate {
        Compression::Deflate(deflate_level as u32)
    } else if snappy {
        Compression::Snappy
    } else {
        Compression::None
    };

    session.identified = true;
    session.settings = settings;
    session.heartbeat_changed = true;
    session.info.set_identity(ClientIdentity {
        client_id: request.client_id.clone(),
        hostname: request.hostname.clone(),
        user_agent: request.user_agent.clone(),
        deflate: matches!(compression, Compression::Deflate(_)),
        snappy: compression == Compression::Snappy,
        sample_rate: request.sample_rate,
        msg_timeout_ms: session.settings.msg_timeout.as_millis() as u64,
        tls: None,
    });

    if request.feature_negotiation {
        let response = IdentifyResponse {
            // tokio-nsq reads this as a u16; config validation keeps it in range.
            max_rdy_count: config.max_rdy_count.min(u16::MAX as u64) as u16,
            version: crate::VERSION.to_owned(),
            max_msg_timeout: config.max_msg_timeout.as_millis() as u64,
            msg_timeout: session.settings.msg_timeout.as_millis() as u64,
            tls_v1: tls,
            deflate: matches!(compression, Compression::Deflate(_)),
            deflate_level,
            max_deflate_level: config.max_deflate_level as i64,
            snappy: compression == Compression::Snappy,
            sample_rate: session.settings.sample_rate as i64,
            auth_required: session.broker.auth.is_some(),
            output_buffer_size: session.settings.output_buffer_size as i64,
            output_buffer_timeout: session
                .settings
                .output_buffer_timeout
                .map_or(-1, |t| t.as_millis() as i64),
        };
        let json = serde_json::to_vec(&response).map_err(|e| {
            ProtocolError::new(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}"))
        })?;
        frame::encode_response(&json, &mut session.conn.output);
    } else {
        frame::encode_response(triage_protocol::OK, &mut session.conn.output);
    }

    // The reply goes out plain. Then, as nsqd: the TLS handshake and an
    // `OK` over TLS; then compression and an `OK` already compressed.
    let upgrade_failed = |e: std::io::Error| {
        ProtocolError::new(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}"))
    };
    let timeout = session
        .settings
        .heartbeat_interval
        .unwrap_or(config.client_timeout);
    if let Some(server) = session.broker.tls.clone().filter(|_| tls) {
        session.conn.flush(timeout).await.map_err(upgrade_failed)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let info = session
            .conn
            .upgrade_tls(&acceptor, config.handshake_timeout)
            .await
            .map_err(upgrade_failed)?;
        tracing::debug!(
            client = session.info.id,
            version = info.version,
            "TLS upgrade"
        );
        session
            .info
            .update_identity(|identity| identity.tls = Some(info));
        frame::encode_response(triage_protocol::OK, &mut session.conn.output);
    }
    let (encoder, decoder) = match compression {
        Compression::None => return Ok(()),
        Compression::Snappy => snappy_pair(),
        Compression::Deflate(level) => deflate_pair(level),
    };
    session.conn.flush(timeout).await.map_err(upgrade_failed)?;
    session
        .conn
        .enable_compression(encoder, decoder)
        .map_err(upgrade_failed)?;
    frame::encode_response(triage_protocol::OK, &mut session.conn.output);
    Ok(())
}

/// Applies nsqd's rules for each numeric field: `-1` disables, `0` keeps the
/// default, anything else must lie within the broker's bounds.
fn negotiate_settings(
    request: &IdentifyRequest,
    config: &triage_config::BrokerConfig,
    current: &Settings,
) -> Result<Settings, ProtocolError> {
    let invalid = |what: &str, value: i64| {
        ProtocolError::new(
            ErrorCode::BadBody,
            format!("IDENTIFY {what} ({value}) is invalid"),
        )
    };
    let ms = |v: i64| Duration::from_millis(v as u64);

    let heartbeat_interval = match request.heartbeat_interval {
        -1 => None,
        0 => current.heartbeat_interval,
        v if v >= 1000 && ms(v) <= config.max_heartbeat_interval => Some(ms(v)),
        v => return Err(invalid("heartbeat interval", v)),
    };
    let output_buffer_size = match request.output_buffer_size {
        -1 => 0,
        0 => DEFAULT_OUTPUT_BUFFER_SIZE,
        v if v >= 64 && v as u64 <= config.max_output_buffer_size => v as usize,
        v => return Err(invalid("output buffer size", v)),
    };
    let output_buffer_timeout = match request.output_buffer_timeout {
        -1 => None,
        0 => Some(DEFAULT_OUTPUT_BUFFER_TIMEOUT),
        v if ms(v) >= config.min_output_buffer_timeout
            && ms(v) <= config.max_output_buffer_timeout =>
        {
            Some(ms(v))
        }
        v => return Err(invalid("output buffer timeout", v)),
    };
    let sample_rate = match request.sample_rate {
        v @ 0..=99 => v as u32,
        v => return Err(invalid("sample rate", v)),
    };
    let msg_timeout = match request.msg_timeout {
        0 => config.msg_timeout,
        v if v >= 1000 && ms(v) <= config.max_msg_timeout => ms(v),
        v => return Err(invalid("msg timeout", v)),
    };
    Ok(Settings {
        heartbeat_interval,
        output_buffer_size,
        output_buffer_timeout,
        msg_timeout,
        sample_rate,
    })
}
