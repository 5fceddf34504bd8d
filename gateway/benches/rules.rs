//! AuthRule evaluation speed (docs/auth.md#rules): target ≤ 5 µs per decision with 1000 rules in the tenant.
//!
//! `cargo bench -p microplane-gateway --bench rules`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use microplane_gateway::auth::rules::{Access, Account, Decision, Rule, RuleSet};

const TENANT: &str = "acme";
const RULES: usize = 1000;

fn rule(scope: &str, resource_type: &str, name: &str, endpoint: &str, access: Access, priority: i32) -> Rule {
    Rule {
        id: format!("{scope}:{resource_type}:{name}:{endpoint}"),
        scope: scope.into(),
        resource_type: resource_type.into(),
        name: name.into(),
        endpoint: endpoint.into(),
        access,
        priority,
    }
}

fn account(scopes: &[&str]) -> Account {
    Account {
        id: "alice".into(),
        issuer_tenant: TENANT.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        account_type: "user".into(),
    }
}

/// 1000 rules: 10 `*`-name rules and 198 services × 5 rules, listed service by service.
fn realistic() -> Vec<Rule> {
    use Access::{Denied, Granted};
    let mut rules = vec![
        rule("*", "*", "*", "*", Granted, -10),
        rule("", "service", "*", "Health.*", Granted, 100),
        rule("", "*", "*", "/internal/*", Denied, 50),
        rule("ops", "service", "*", "Debug.*", Granted, 20),
        rule("", "service", "auth", "Auth.Token", Granted, 0),
        rule("+", "service", "*", "Public.*", Granted, 0),
        rule("admin", "*", "*", "*", Granted, 30),
        rule("*", "service", "*", "/metrics", Denied, 40),
        rule("ops", "service", "*", "/debug/*", Granted, 25),
        rule("", "service", "*", "Status.Get", Granted, 0),
    ];
    let mut i = 0;
    while rules.len() < RULES {
        let (svc, cap) = (format!("svc{i}"), format!("Svc{i}"));
        rules.extend([
            rule("*", "service", &svc, "*", Granted, 0),
            rule("admin", "service", &svc, &format!("{cap}.Admin*"), Granted, 10),
            rule("*", "service", &svc, &format!("{cap}.Delete"), Denied, 5),
            rule("", "service", &svc, "/api/*", Granted, 0),
            rule("+", "service", &svc, &format!("{cap}.Call"), Granted, 1),
        ]);
        i += 1;
    }
    rules.truncate(RULES);
    rules
}

/// 1000 `*:*:…` granting rules; rule i has scope `scope(i)` and endpoint `endpoint(i)`.
fn worst(scope: impl Fn(usize) -> String, endpoint: impl Fn(usize) -> String) -> Vec<Rule> {
    (0..RULES)
        .map(|i| rule(&scope(i), "*", "*", &endpoint(i), Access::Granted, 0))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules_1000");
    let user = account(&["user", "reader", "billing"]);

    let set = RuleSet::new(realistic());
    let cases: [(&str, Option<&Account>, &str, &str, Decision); 4] = [
        (
            "realistic/account_call",
            Some(&user),
            "svc123",
            "Svc123.Call",
            Decision::Granted,
        ),
        (
            "realistic/anonymous_delete",
            None,
            "svc123",
            "Svc123.Delete",
            Decision::Unauthorized,
        ),
        (
            "realistic/account_admin_glob",
            Some(&user),
            "SVC77",
            "Svc77.AdminReset",
            Decision::Granted,
        ),
        (
            "realistic/unknown_service",
            Some(&user),
            "nosuch",
            "Nosuch.Call",
            Decision::Granted,
        ),
    ];
    for (name, acc, svc, ep, want) in cases {
        assert_eq!(set.decide(TENANT, acc, "service", svc, ep), want, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| {
                set.decide(
                    black_box(TENANT),
                    black_box(acc),
                    "service",
                    black_box(svc),
                    black_box(ep),
                )
            })
        });
    }

    let named = |i: usize| format!("scope{i}");
    let own = |_| "*".to_string();
    let public = |_| String::new();
    let method = |i: usize| format!("Helloworld.Method{i}");
    let glob = |i: usize| format!("Helloworld.Method{i}.*");
    let path = |i: usize| format!("/api/v{}/res{i}/*", i % 10);
    let mut types: Vec<Rule> = (1..RULES)
        .map(|_| rule("*", "function", "*", "*", Access::Granted, 0))
        .collect();
    types.push(rule("*", "*", "*", "*", Access::Granted, 0));
    let held: Vec<String> = (980..RULES).map(named).collect();
    let held = account(&held.iter().map(String::as_str).collect::<Vec<_>>());
    let worst_cases: [(&str, RuleSet, Option<&Account>, &str, Decision); 9] = [
        // Every rule matches the resource; the account holds none of the scopes.
        (
            "worst/named_scopes_not_held",
            RuleSet::new(worst(named, |_| "*".into())),
            Some(&user),
            "X.Y",
            Decision::Forbidden,
        ),
        // Every rule matches the resource; the account holds 20 scopes, of the last 20 rules.
        (
            "worst/named_scopes_held_last",
            RuleSet::new(worst(named, |_| "*".into())),
            Some(&held),
            "X.Y",
            Decision::Granted,
        ),
        // 1000 distinct exact endpoints (here and below, only the last rule's matches).
        (
            "worst/exact_endpoints_named",
            RuleSet::new(worst(named, method)),
            Some(&user),
            "Helloworld.Method999",
            Decision::Forbidden,
        ),
        (
            "worst/exact_endpoints_own",
            RuleSet::new(worst(own, method)),
            Some(&user),
            "Helloworld.Method999",
            Decision::Granted,
        ),
        (
            "worst/exact_endpoints_public_anon",
            RuleSet::new(worst(public, method)),
            None,
            "Helloworld.Method999",
            Decision::Granted,
        ),
        // 1000 globs.
        (
            "worst/globs_own",
            RuleSet::new(worst(own, glob)),
            Some(&user),
            "Helloworld.Method999.Call",
            Decision::Granted,
        ),
        (
            "worst/globs_public_anon",
            RuleSet::new(worst(public, glob)),
            None,
            "Helloworld.Method999.Call",
            Decision::Granted,
        ),
        // 1000 path wildcards.
        (
            "worst/path_wildcards_own",
            RuleSet::new(worst(own, path)),
            Some(&user),
            "/api/v9/res999/items/7",
            Decision::Granted,
        ),
        // 999 rules of another type, all scanned.
        (
            "worst/other_types_scanned",
            RuleSet::new(types),
            Some(&user),
            "X.Y",
            Decision::Granted,
        ),
    ];
    for (name, set, acc, ep, want) in &worst_cases {
        assert_eq!(set.decide(TENANT, *acc, "service", "svc1", ep), *want, "{name}");
        g.bench_function(*name, |b| {
            b.iter(|| {
                set.decide(
                    black_box(TENANT),
                    black_box(*acc),
                    "service",
                    black_box("svc1"),
                    black_box(ep),
                )
            })
        });
    }
    g.finish();

    c.bench_function("rules_1000/build", |b| {
        b.iter_with_large_drop(|| RuleSet::new(black_box(realistic())))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
        .without_plots();
    targets = bench
}
criterion_main!(benches);
