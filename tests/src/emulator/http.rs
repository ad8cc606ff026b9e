//! Response builders and request-body helpers shared by the endpoints.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

/// Every legitimate request body here is a small form or JSON document.
const MAX_BODY: usize = 64 * 1024;

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) fn with_body(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Resp {
    // Serialising our own plain structs and json! values cannot fail.
    let body = serde_json::to_vec(value).unwrap_or_default();
    with_body(status, "application/json; charset=utf-8", body)
}

/// The data plane's error shape: `{"message": "..."}`.
pub(crate) fn message(status: StatusCode, msg: &str) -> Resp {
    json(status, &serde_json::json!({ "message": msg }))
}

/// ARM's error shape: `{"error": {"code", "message"}}`.
pub(crate) fn arm_error(status: StatusCode, code: &str, msg: &str) -> Resp {
    json(
        status,
        &serde_json::json!({ "error": { "code": code, "message": msg } }),
    )
}

pub(crate) fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// The Tomcat-style HTML page the Bastion front end serves for unknown tunnels.
pub(crate) fn html_page(status: StatusCode) -> Resp {
    with_body(status, "text/html;charset=utf-8", tomcat_page(status))
}

pub(crate) fn tomcat_page(status: StatusCode) -> String {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!doctype html><html lang=\"en\"><head><title>HTTP Status {code} – {reason}</title></head>\
         <body><h1>HTTP Status {code} – {reason}</h1><hr class=\"line\" /><h3>Apache Tomcat</h3></body></html>"
    )
}

/// Reads a bounded request body; None if it is too big or the connection failed.
pub(crate) async fn read_body(body: Incoming) -> Option<Bytes> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

/// Whether the request says its body is a form.
pub(crate) fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Form fields, first occurrence wins.
pub(crate) fn form_field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

pub(crate) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// A query parameter, case-sensitive like ARM's `api-version`.
pub(crate) fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    let q = uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
