//! The upgrade handshake: real browser requests, every refusal, and the client side checked
//! against the server side.

use peerd_ws::{
    check_response, client_key, client_request, parse_upgrade, HandshakeError, Refusal, Upgrade,
    UpgradePolicy,
};

/// A request as Chrome 124 sends it (header order and values from a capture), with the
/// RFC 6455 §1.3 sample key.
const CHROME: &str = "GET /ws?token=abc HTTP/1.1\r\n\
Host: localhost:9000\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://localhost:8080\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: peerd.v1\r\n\
\r\n";

/// Firefox's differences: `Connection: keep-alive, Upgrade` and the subprotocol among others.
const FIREFOX: &str = "GET /ws HTTP/1.1\r\n\
Host: localhost:9000\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Sec-WebSocket-Version: 13\r\n\
Origin: http://LOCALHOST:8080\r\n\
Sec-WebSocket-Protocol: chat, peerd.v1\r\n\
Sec-WebSocket-Extensions: permessage-deflate\r\n\
Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
Connection: keep-alive, Upgrade\r\n\
Sec-Fetch-Dest: empty\r\n\
Sec-Fetch-Mode: websocket\r\n\
Sec-Fetch-Site: same-site\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
Upgrade: websocket\r\n\
\r\n";

fn origins() -> Vec<String> {
    vec!["http://localhost:8080".to_string()]
}

fn policy(origins: &[String]) -> UpgradePolicy<'_> {
    UpgradePolicy {
        path: Some("/ws"),
        protocol: Some("peerd.v1"),
        origins: Some(origins),
        max_header: 8192,
    }
}

fn accept(req: &str) -> (Upgrade, usize) {
    let o = origins();
    parse_upgrade(req.as_bytes(), &policy(&o))
        .unwrap_or_else(|r| panic!("refused: {r}"))
        .expect("complete")
}

fn refuse(req: &str) -> Refusal {
    let o = origins();
    refuse_with(req, &policy(&o))
}

fn refuse_with(req: &str, policy: &UpgradePolicy<'_>) -> Refusal {
    match parse_upgrade(req.as_bytes(), policy) {
        Err(r) => r,
        Ok(x) => panic!("accepted: {x:?}"),
    }
}

/// CHROME with one header line replaced (`None` removes it).
fn chrome_with(name: &str, line: Option<&str>) -> String {
    CHROME
        .split_inclusive("\r\n")
        .filter_map(|l| {
            if l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            {
                line.map(|x| format!("{x}\r\n"))
            } else {
                Some(l.to_string())
            }
        })
        .collect()
}

#[test]
fn chrome_request_is_accepted() {
    let mut bytes = CHROME.as_bytes().to_vec();
    bytes.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]); // a first frame right behind
    let o = origins();
    let (up, consumed) = parse_upgrade(&bytes, &policy(&o)).unwrap().unwrap();
    assert_eq!(consumed, CHROME.len());
    assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(up.protocol.as_deref(), Some("peerd.v1"));
    assert_eq!(up.path, "/ws?token=abc");
    assert_eq!(up.origin.as_deref(), Some("http://localhost:8080"));
    assert_eq!(
        String::from_utf8(up.response()).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: peerd.v1\r\n\r\n"
    );
}

#[test]
fn firefox_request_is_accepted() {
    let (up, consumed) = accept(FIREFOX);
    assert_eq!(consumed, FIREFOX.len());
    assert_eq!(up.accept, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
    assert_eq!(up.protocol.as_deref(), Some("peerd.v1"));
    assert_eq!(up.path, "/ws");
}

#[test]
fn open_policy_accepts_a_minimal_request() {
    let req = "GET /anything HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\
               Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let open = UpgradePolicy {
        path: None,
        protocol: None,
        origins: None,
        max_header: 8192,
    };
    let (up, _) = parse_upgrade(req.as_bytes(), &open).unwrap().unwrap();
    assert_eq!(up.protocol, None);
    assert_eq!(up.origin, None);
    assert!(!String::from_utf8(up.response())
        .unwrap()
        .contains("Sec-WebSocket-Protocol"));
}

#[test]
fn every_prefix_is_incomplete() {
    let o = origins();
    for n in 0..CHROME.len() {
        assert_eq!(
            parse_upgrade(&CHROME.as_bytes()[..n], &policy(&o)),
            Ok(None),
            "prefix {n}"
        );
    }
}

#[test]
fn missing_origin_is_accepted_with_an_allow_list() {
    // Non-browser clients send no Origin; see UpgradePolicy::origins.
    let (up, _) = accept(&chrome_with("origin", None));
    assert_eq!(up.origin, None);
    // Case-insensitive match.
    accept(&chrome_with(
        "origin",
        Some("Origin: HTTP://LocalHost:8080"),
    ));
}

#[test]
fn refusal_400_malformed() {
    let r = refuse("GET /ws HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    assert_eq!((r.status, r.reason), (400, "Bad Request"));
    assert_eq!(refuse("\x01GET / HTTP/1.1\r\n\r\n").status, 400);
}

#[test]
fn refusal_505_version() {
    let r = refuse(&CHROME.replacen("HTTP/1.1", "HTTP/1.0", 1));
    assert_eq!(r.status, 505);
    assert_eq!(
        refuse(&CHROME.replacen("HTTP/1.1", "HTTP/2.0", 1)).status,
        505
    );
}

#[test]
fn refusal_431_too_many_or_too_long() {
    let mut req = CHROME.trim_end_matches("\r\n").to_string();
    for i in 0..70 {
        req.push_str(&format!("\r\nX-Filler-{i}: y"));
    }
    req.push_str("\r\n\r\n");
    assert_eq!(refuse(&req).status, 431);
    // Incomplete and already at max_header.
    let o = origins();
    let small = UpgradePolicy {
        max_header: 100,
        ..policy(&o)
    };
    assert_eq!(parse_upgrade(&CHROME.as_bytes()[..99], &small), Ok(None));
    assert_eq!(refuse_with(&CHROME[..100], &small).status, 431);
    // Complete but longer than max_header.
    assert_eq!(refuse_with(CHROME, &small).status, 431);
}

#[test]
fn refusal_405_method() {
    let r = refuse(&CHROME.replacen("GET", "POST", 1));
    assert_eq!((r.status, r.reason), (405, "Method Not Allowed"));
    assert_eq!(r.headers, vec![("Allow", "GET".to_string())]);
}

#[test]
fn refusal_400_no_host() {
    let r = refuse(&chrome_with("host", None));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Host"));
}

#[test]
fn refusal_404_path() {
    let r = refuse(&CHROME.replacen("/ws?token=abc", "/other", 1));
    assert_eq!(r.status, 404);
    // The path part is compared exactly.
    assert_eq!(refuse(&CHROME.replacen("/ws?", "/ws/?", 1)).status, 404);
    // A browser's stray plain GET gets a 404, not a 426.
    assert_eq!(
        refuse("GET /favicon.ico HTTP/1.1\r\nHost: localhost\r\n\r\n").status,
        404
    );
}

#[test]
fn refusal_426_not_an_upgrade() {
    let plain = "GET /ws HTTP/1.1\r\nHost: localhost:9000\r\nAccept: text/html\r\n\r\n";
    let r = refuse(plain);
    assert_eq!((r.status, r.reason), (426, "Upgrade Required"));
    assert_eq!(r.headers, vec![("Upgrade", "websocket".to_string())]);
    assert!(r.body.contains("peerd WebSocket endpoint"), "{}", r.body);
    assert!(r.body.contains("peerd.v1"), "{}", r.body);
    // Upgrade present but Connection lacks the token, and the reverse.
    assert_eq!(
        refuse(&chrome_with("connection", Some("Connection: keep-alive"))).status,
        426
    );
    assert_eq!(
        refuse(&chrome_with("upgrade", Some("Upgrade: h2c"))).status,
        426
    );
    assert_eq!(refuse(&chrome_with("upgrade", None)).status, 426);
}

#[test]
fn refusal_426_websocket_version() {
    for line in [
        None,
        Some("Sec-WebSocket-Version: 8"),
        Some("Sec-WebSocket-Version: 13, 8"),
    ] {
        let r = refuse(&chrome_with("sec-websocket-version", line));
        assert_eq!(r.status, 426, "{line:?}");
        assert!(r
            .headers
            .contains(&("Sec-WebSocket-Version", "13".to_string())));
    }
}

#[test]
fn refusal_400_key() {
    for line in [
        None,
        Some("Sec-WebSocket-Key: "),
        Some("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ"), // unpadded
        Some("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j"),   // 15 bytes
        Some("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZTEy"), // 18 bytes
        Some("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!Q=="), // not base64
    ] {
        assert_eq!(
            refuse(&chrome_with("sec-websocket-key", line)).status,
            400,
            "{line:?}"
        );
    }
    let twice = CHROME.replacen(
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n",
        1,
    );
    assert_eq!(refuse(&twice).status, 400);
}

#[test]
fn refusal_403_origin() {
    let r = refuse(&chrome_with("origin", Some("Origin: https://evil.example")));
    assert_eq!((r.status, r.reason), (403, "Forbidden"));
}

#[test]
fn refusal_400_protocol() {
    let r = refuse(&chrome_with("sec-websocket-protocol", None));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("required"), "{}", r.body);
    assert!(r.body.contains("offer subprotocol peerd.v1"), "{}", r.body);
    let r = refuse(&chrome_with(
        "sec-websocket-protocol",
        Some("Sec-WebSocket-Protocol: chat, peerd.v2"),
    ));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("offer subprotocol peerd.v1"), "{}", r.body);
    // Several headers: any one of them may carry it.
    let several = chrome_with(
        "sec-websocket-protocol",
        Some("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: x, peerd.v1"),
    );
    assert_eq!(accept(&several).0.protocol.as_deref(), Some("peerd.v1"));
}

#[test]
fn refusal_response_is_valid_http() {
    let r = refuse(&CHROME.replacen("GET", "PUT", 1));
    let bytes = r.response();
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(&bytes).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("partial"),
    };
    assert_eq!(resp.code, Some(405));
    assert_eq!(resp.reason, Some("Method Not Allowed"));
    let get = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap().to_string())
    };
    assert_eq!(
        get("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(get("connection").as_deref(), Some("close"));
    assert_eq!(get("allow").as_deref(), Some("GET"));
    let body = &bytes[n..];
    assert_eq!(get("content-length"), Some(body.len().to_string()));
    assert!(body.ends_with(b"\n"));
    assert_eq!(body, r.body.as_bytes());
}

// ---- client side --------------------------------------------------------------------------

#[test]
fn client_key_is_16_random_bytes() {
    let a = client_key();
    let b = client_key();
    assert_eq!(a.len(), 24);
    assert!(a.ends_with("=="));
    assert_ne!(a, b);
}

#[test]
fn client_and_server_agree() {
    let key = client_key();
    let req = client_request("example.com:9000", "/ws", "peerd.v1", &key);
    let o = origins();
    let (up, consumed) = parse_upgrade(&req, &policy(&o)).unwrap().unwrap();
    assert_eq!(consumed, req.len());
    assert_eq!(up.origin, None);
    let mut resp = up.response();
    let head = resp.len();
    resp.extend_from_slice(&[0x82, 0x00]); // first frame right behind
    assert_eq!(
        check_response(&resp, &key, "peerd.v1", 4096).unwrap(),
        Some(head)
    );
    for n in 0..head {
        assert_eq!(
            check_response(&resp[..n], &key, "peerd.v1", 4096).unwrap(),
            None
        );
    }
    assert!(matches!(
        check_response(&resp[..head - 1], &key, "peerd.v1", 50),
        Err(HandshakeError::TooLarge)
    ));
}

#[test]
fn client_without_protocol() {
    let key = client_key();
    let req = client_request("h", "", "", &key);
    assert!(!String::from_utf8(req.clone()).unwrap().contains("Protocol"));
    let open = UpgradePolicy {
        path: None,
        protocol: None,
        origins: None,
        max_header: 8192,
    };
    let (up, _) = parse_upgrade(&req, &open).unwrap().unwrap();
    assert_eq!(up.path, "/");
    assert_eq!(
        check_response(&up.response(), &key, "", 4096).unwrap(),
        Some(up.response().len())
    );
    // A subprotocol the client did not offer fails it.
    let chosen = Upgrade {
        protocol: Some("x".into()),
        ..up
    };
    assert!(matches!(
        check_response(&chosen.response(), &key, "", 4096),
        Err(HandshakeError::Malformed(_))
    ));
}

#[test]
fn client_rejects_bad_responses() {
    let key = client_key();
    let req = client_request("h", "/ws", "peerd.v1", &key);
    let o = origins();
    let (up, _) = parse_upgrade(&req, &policy(&o)).unwrap().unwrap();

    let wrong_key = client_key();
    assert!(matches!(
        check_response(&up.response(), &wrong_key, "peerd.v1", 4096),
        Err(HandshakeError::BadAccept)
    ));
    let no_proto = Upgrade {
        protocol: None,
        ..up.clone()
    };
    assert!(matches!(
        check_response(&no_proto.response(), &key, "peerd.v1", 4096),
        Err(HandshakeError::NoProtocol)
    ));
    let with_ext = String::from_utf8(up.response()).unwrap().replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    );
    assert!(matches!(
        check_response(with_ext.as_bytes(), &key, "peerd.v1", 4096),
        Err(HandshakeError::Malformed(_))
    ));
    let no_upgrade = String::from_utf8(up.response())
        .unwrap()
        .replace("Upgrade: websocket\r\n", "");
    assert!(matches!(
        check_response(no_upgrade.as_bytes(), &key, "peerd.v1", 4096),
        Err(HandshakeError::Malformed(_))
    ));
    assert!(matches!(
        check_response(b"HTTP/1.1 101 \x01\r\n\r\n", &key, "peerd.v1", 4096),
        Err(HandshakeError::Malformed(_))
    ));
}

#[test]
fn client_sees_the_refusal() {
    let req = "GET /ws HTTP/1.1\r\nHost: h\r\n\r\n";
    let r = refuse(req);
    let resp = r.response();
    let err = check_response(&resp, "k", "peerd.v1", 4096).unwrap_err();
    match &err {
        HandshakeError::Status { status, body } => {
            assert_eq!(*status, 426);
            assert_eq!(body, &r.body);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("426"));
    assert!(err.to_string().contains("peerd.v1"));
    // Only part of the body has arrived: best effort.
    let partial = &resp[..resp.len() - 5];
    match check_response(partial, "k", "peerd.v1", 4096) {
        Err(HandshakeError::Status { status: 426, body }) => {
            assert_eq!(body, r.body[..r.body.len() - 5])
        }
        other => panic!("{other:?}"),
    }
}
