//! The Lambda request event AWS IoT Core sends an authorizer function (reference §2.4), built
//! from what the connection presented. The event carries the token and the password: never log it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};

/// What the Lambda request event is built from.
pub struct EventInput<'a> {
    pub token: Option<&'a str>,
    pub signature_verified: bool,
    /// SNI host name.
    pub server_name: Option<&'a str>,
    /// WebSocket upgrade headers and raw query string; `None` for MQTT directly over TLS.
    pub http: Option<(&'a [(String, String)], &'a str)>,
    /// Raw username, query included.
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// Empty when the client sent none.
    pub client_id: &'a str,
}

/// The exact Lambda request event (reference §2.4). Fields that do not apply are omitted.
/// The event carries the token and password: never log it.
pub fn lambda_event(e: &EventInput) -> Value {
    let mut event = Map::new();
    if let Some(token) = e.token {
        event.insert("token".into(), token.into());
    }
    event.insert("signatureVerified".into(), e.signature_verified.into());
    let protocols: &[&str] = if e.http.is_some() {
        &["tls", "http", "mqtt"]
    } else {
        &["tls", "mqtt"]
    };
    event.insert("protocols".into(), json!(protocols));

    let mut data = Map::new();
    if let Some(sni) = e.server_name {
        data.insert("tls".into(), json!({ "serverName": sni }));
    }
    if let Some((headers, query)) = e.http {
        let mut h = Map::new();
        for (name, value) in headers {
            match h.get_mut(name) {
                // A repeated header: comma-joined, as HTTP allows.
                Some(Value::String(v)) => {
                    v.push(',');
                    v.push_str(value);
                }
                _ => {
                    h.insert(name.clone(), value.as_str().into());
                }
            }
        }
        let mut http = Map::new();
        http.insert("headers".into(), Value::Object(h));
        let query = query.strip_prefix('?').unwrap_or(query);
        if !query.is_empty() {
            http.insert("queryString".into(), format!("?{query}").into());
        }
        data.insert("http".into(), Value::Object(http));
    }
    let mut mqtt = Map::new();
    if let Some(username) = e.username {
        mqtt.insert("username".into(), username.into());
    }
    if let Some(password) = e.password {
        mqtt.insert("password".into(), BASE64.encode(password).into());
    }
    if !e.client_id.is_empty() {
        mqtt.insert("clientId".into(), e.client_id.into());
    }
    if !mqtt.is_empty() {
        data.insert("mqtt".into(), Value::Object(mqtt));
    }
    event.insert("protocolData".into(), Value::Object(data));
    event.insert(
        "connectionMetadata".into(),
        json!({ "id": uuid::Uuid::new_v4().to_string() }),
    );
    Value::Object(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom_auth::test_support::input_for;

    fn assert_uuid_v4(s: &str) {
        assert_eq!(s.len(), 36, "{s}");
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{s}"
        );
        assert!(
            s.chars()
                .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{s}"
        );
        assert!(parts[2].starts_with('4'), "{s}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{s}");
    }

    fn keys_of(v: &Value) -> Vec<&str> {
        v.as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn lambda_event_direct_mqtt() {
        let username =
            "dev?x-amz-customauthorizer-name=a&x-amz-customauthorizer-signature=c2ln&token=t";
        let e = lambda_event(&EventInput {
            token: Some("t"),
            signature_verified: true,
            server_name: Some("abc-ats.iot.eu-west-1.amazonaws.com"),
            http: None,
            username: Some(username),
            password: Some(&[0xDE, 0xAD, b'p', b'w']),
            client_id: "sensor-1",
        });
        let mut top = keys_of(&e);
        top.sort_unstable();
        assert_eq!(
            top,
            [
                "connectionMetadata",
                "protocolData",
                "protocols",
                "signatureVerified",
                "token"
            ]
        );
        assert_eq!(e["token"], "t");
        assert_eq!(e["signatureVerified"], true);
        assert_eq!(e["protocols"], json!(["tls", "mqtt"]));
        let mut data = keys_of(&e["protocolData"]);
        data.sort_unstable();
        assert_eq!(data, ["mqtt", "tls"]);
        assert_eq!(
            e["protocolData"]["tls"],
            json!({ "serverName": "abc-ats.iot.eu-west-1.amazonaws.com" })
        );
        assert_eq!(
            e["protocolData"]["mqtt"],
            json!({ "username": username, "password": "3q1wdw==", "clientId": "sensor-1" })
        );
        assert_eq!(keys_of(&e["connectionMetadata"]), ["id"]);
        assert_uuid_v4(e["connectionMetadata"]["id"].as_str().expect("id"));
    }

    #[test]
    fn lambda_event_websocket() {
        let headers = vec![
            (
                "host".to_string(),
                "abc-ats.iot.us-east-1.amazonaws.com".to_string(),
            ),
            ("x-amz-customauthorizer-name".to_string(), "a".to_string()),
            ("mytoken".to_string(), "t".to_string()),
        ];
        let e = lambda_event(&EventInput {
            token: None,
            signature_verified: false,
            server_name: Some("abc-ats.iot.us-east-1.amazonaws.com"),
            http: Some((&headers, "x-amz-customauthorizer-name=a")),
            username: None,
            password: Some(b"demo-password"),
            client_id: "ws-1",
        });
        let mut top = keys_of(&e);
        top.sort_unstable();
        assert_eq!(
            top,
            [
                "connectionMetadata",
                "protocolData",
                "protocols",
                "signatureVerified"
            ]
        );
        assert_eq!(e["protocols"], json!(["tls", "http", "mqtt"]));
        assert_eq!(
            e["protocolData"]["http"],
            json!({
                "headers": {
                    "host": "abc-ats.iot.us-east-1.amazonaws.com",
                    "x-amz-customauthorizer-name": "a",
                    "mytoken": "t"
                },
                "queryString": "?x-amz-customauthorizer-name=a"
            })
        );
        assert_eq!(
            e["protocolData"]["mqtt"],
            json!({ "password": "ZGVtby1wYXNzd29yZA==", "clientId": "ws-1" })
        );
    }

    #[test]
    fn lambda_event_omits_what_does_not_apply() {
        let e = lambda_event(&EventInput {
            token: None,
            signature_verified: false,
            server_name: None,
            http: Some((&[], "")),
            username: None,
            password: None,
            client_id: "",
        });
        assert_eq!(e["protocolData"], json!({ "http": { "headers": {} } }));
        assert!(e.get("token").is_none());
        let a = lambda_event(&EventInput {
            http: None,
            ..input_for("u", None, None)
        });
        let b = lambda_event(&EventInput {
            http: None,
            ..input_for("u", None, None)
        });
        assert_ne!(a["connectionMetadata"]["id"], b["connectionMetadata"]["id"]);
    }
}
