//! Micro's path resolver on arbitrary paths: it never panics, a resolved service never contains
//! `/`, and a path without `%` resolves exactly as its cleaned form does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microplane_gateway::resolve::{clean_segments, proxy_rest, resolve_path};

fuzz_target!(|path: &str| {
    let resolved = resolve_path(path);
    if let Ok(r) = &resolved {
        assert!(!r.service.contains('/'), "service {:?} from {path:?}", r.service);
        assert!(!r.service.is_empty(), "empty service from {path:?}");
    }
    if let Ok((service, rest)) = proxy_rest(path) {
        assert!(!service.contains('/'), "proxied service {service:?} from {path:?}");
        assert!(rest.starts_with('/'), "backend path {rest:?} from {path:?}");
    }
    if !path.contains('%') {
        // Without percent-encoding, cleaning cannot fail (decoding is the identity).
        let segments = clean_segments(path).expect("a path without % always cleans");
        let cleaned = format!("/{}", segments.join("/"));
        assert_eq!(
            resolve_path(&cleaned),
            resolved,
            "{path:?} and its cleaned form {cleaned:?}"
        );
        assert_eq!(
            clean_segments(&cleaned).expect("a cleaned path cleans"),
            segments,
            "cleaning is idempotent"
        );
    }
});
