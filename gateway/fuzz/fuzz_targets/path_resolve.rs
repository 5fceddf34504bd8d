//! The paths the gateway decides on, on arbitrary input:
//!
//! - Micro's resolver never panics, and a resolved service is a non-empty name without `/`;
//! - a path without `%` resolves exactly as its cleaned form does, and cleaning is idempotent;
//! - **the authorizer and the backend agree** (docs/gateway.md, "Paths"): for an `Http` service, the
//!   path the rules match (`decoded`) is exactly what a backend gets by percent-decoding the path
//!   it receives (`forward`), segment by segment; `forward` is stable (sending it again changes
//!   nothing), holds no dot segment, empty segment, `;`, `\`, or encoded `/`, and a backend that
//!   normalises it again (decodes, then cleans) still reads the path the rules saw.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microplane_gateway::resolve::{clean_segments, proxy_path, resolve_path};
use percent_encoding::percent_decode_str;

fuzz_target!(|path: &str| {
    let resolved = resolve_path(path);
    if let Ok(r) = &resolved {
        assert!(!r.service.contains('/'), "service {:?} from {path:?}", r.service);
        assert!(!r.service.is_empty(), "empty service from {path:?}");
    }
    if !path.contains('%') && !path.contains(';') && !path.contains('\\') && !path.chars().any(char::is_control) {
        // Without percent-encoding (or what is refused as sent), cleaning cannot fail.
        let segments = clean_segments(path).expect("a plain path always cleans");
        let cleaned = format!("/{}", segments.join("/"));
        assert_eq!(resolve_path(&cleaned), resolved, "{path:?} and its cleaned form {cleaned:?}");
        assert_eq!(
            clean_segments(&cleaned).expect("a cleaned path cleans"),
            segments,
            "cleaning is idempotent"
        );
    }

    let Ok(p) = proxy_path(path) else { return };
    assert!(!p.service.contains('/') && !p.service.is_empty(), "service {:?} from {path:?}", p.service);
    assert!(p.forward.starts_with('/') && p.decoded.starts_with('/'), "{p:?} from {path:?}");
    // What a backend decoding the path it receives reads, segment by segment.
    let backend: Vec<String> = p
        .forward
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8().expect("forwarded segments are UTF-8").into_owned())
        .collect();
    assert_eq!(backend.join("/"), p.decoded, "backend and rules disagree for {path:?}: {p:?}");
    let inner = &p.forward[1..p.forward.len() - usize::from(p.forward.ends_with('/') && p.forward.len() > 1)];
    for raw in inner.split('/').filter(|_| p.forward != "/") {
        assert!(!raw.is_empty(), "empty segment in {:?} from {path:?}", p.forward);
        let seg = percent_decode_str(raw).decode_utf8().unwrap();
        assert!(seg != "." && seg != "..", "dot segment in {:?} from {path:?}", p.forward);
        assert!(!seg.contains(['/', '\\', ';']), "ambiguous segment {seg:?} from {path:?}");
    }
    // Stable: forwarding the forwarded path again is the identity.
    let again = proxy_path(&format!("/{}{}", p.service.replace('%', "%25"), p.forward))
        .unwrap_or_else(|e| panic!("the forwarded path {:?} is refused: {e}", p.forward));
    assert_eq!((&again.decoded, &again.forward), (&p.decoded, &p.forward), "from {path:?}");
    // A backend that normalises what it decoded reads the same path.
    let renormalised = clean_segments(&p.decoded.replace('%', "%25")).expect("the decoded path cleans");
    let mut joined = format!("/{}", renormalised.join("/"));
    if p.decoded.ends_with('/') && joined != "/" {
        joined.push('/');
    }
    assert_eq!(joined, p.decoded, "a normalising backend reads another path for {path:?}");
});
