//! Request extractors whose rejections are [`ApiError`]s, so a bad request
//! answers 400 INVALID_REQUEST in the envelope like every other error, with
//! a message naming the field, the expected type in plain words and the value
//! (`port: invalid value: integer 65536, expected an integer from 0 to
//! 65535`), never axum's plain-text rejections.
//!
//! - [`Body<T>`]: a JSON body, required. The `Content-Type` is not checked:
//!   katran-server's clients (and `curl -d`) do not always send one.
//! - [`Params<T>`]: for the GET endpoints the document gives a body: the JSON
//!   body when there is one, otherwise the query string
//!   (`?address=10.0.0.1&port=80&proto=6`, as katran's reference client sends).
//! - [`OptionalBody<T>`]: a JSON body that may be empty (`T::default()`);
//! - [`RawBody`]: the bytes, parsed later with [`parse_json`].
//!
//! Unknown fields are ignored (serde's default): the reference client sends
//! extra fields such as `healthy` on reals.

use crate::error::Code;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A required JSON body.
#[derive(Debug, Clone)]
pub(crate) struct Body<T>(pub T);

/// A JSON body, or the query string when the body is empty.
#[derive(Debug, Clone)]
pub(crate) struct Params<T>(pub T);

/// A JSON body, or `T::default()` when it is empty.
#[derive(Debug, Clone)]
pub(crate) struct OptionalBody<T>(pub T);

/// The body's bytes, for handlers that parse it later (`/lb/create`, on a
/// blocking thread).
#[derive(Debug, Clone)]
pub(crate) struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read_body(req, state).await.map(RawBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = read_body(req, state).await?;
        parse_json(&body).map(Body)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let uri = req.uri().clone();
        let body = read_body(req, state).await?;
        if !is_blank(&body) {
            return parse_json(&body).map(Params);
        }
        super::query::from_query(uri.query().unwrap_or_default())
            .map(Params)
            .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = read_body(req, state).await?;
        if is_blank(&body) {
            return Ok(OptionalBody(T::default()));
        }
        parse_json(&body).map(OptionalBody)
    }
}

/// Parses a JSON request body the way every endpoint does (used by
/// `create_from_json` too, so `--config FILE` answers like the endpoint).
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if is_blank(body) {
        return Err(ApiError::invalid("invalid request body: empty; a JSON object is required"));
    }
    // axum's parser reports the path of the offending field (`vip.port: ...`).
    Json::<T>::from_bytes(body)
        .map(|Json(value)| value)
        .map_err(|e| ApiError::invalid(format!("invalid request body: {}", plain_types(detail(&e.body_text())))))
}

/// serde's type names in plain words: "expected u16" becomes "expected an
/// integer from 0 to 65535" (the field and the value are already named).
fn plain_types(message: &str) -> String {
    const TYPES: &[(&str, &str)] = &[
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected an integer from 0 to 18446744073709551615"),
        ("expected i32", "expected an integer from -2147483648 to 2147483647"),
        ("expected i64", "expected an integer from -9223372036854775808 to 9223372036854775807"),
        ("expected a boolean", "expected true or false"),
    ];
    TYPES.iter().fold(message.to_owned(), |message, (serde, plain)| message.replace(serde, plain))
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        // katran has no code for a body over the limit: 413 with INVALID_REQUEST.
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
        ApiError::with_status(status, Code::InvalidRequest, format!("request body: {}", e.body_text()))
    })
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// axum's rejection text without its generic preamble: "Failed to
/// deserialize the JSON body into the target type: port: invalid value..."
/// becomes "port: invalid value...".
fn detail(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, detail)| detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // only deserialized
    struct Key {
        address: String,
        port: u16,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // only deserialized
    struct Nested {
        vip: Key,
    }

    fn message<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        parse_json::<T>(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(message::<Key>(""), "invalid request body: empty; a JSON object is required");
        assert_eq!(
            message::<Key>(r#"{"address":"a"}"#),
            "invalid request body: missing field `port` at line 1 column 15"
        );
        assert_eq!(
            message::<Key>(r#"{"address":"a","port":65536}"#),
            "invalid request body: port: invalid value: integer `65536`, expected an integer from 0 to 65535 at line 1 \
             column 27"
        );
        assert_eq!(
            message::<Nested>(r#"{"vip":{"address":"a","port":"x"}}"#),
            "invalid request body: vip.port: invalid type: string \"x\", expected an integer from 0 to 65535 at line \
             1 column 32"
        );
        assert!(message::<Key>("{").starts_with("invalid request body: EOF while parsing"), "{}", message::<Key>("{"));
    }
}
