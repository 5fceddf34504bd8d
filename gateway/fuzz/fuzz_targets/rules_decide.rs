//! AuthRule evaluation against a plain reading of SPEC §5 (docs/auth.md#rules), on arbitrary rule
//! sets, accounts (none, the tenant's own, foreign) and requests: the indexed evaluator must give
//! the reference's decision every time. The alphabets are small so that rules and requests meet.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use microplane_gateway::auth::rules::{Access, Account, Decision, Rule, RuleSet};

const TENANT: &str = "t";

fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> Result<&'a str> {
    Ok(from[u.choose_index(from.len())?])
}

/// A short endpoint over an alphabet where paths, globs and `Svc.Method`s all occur.
fn endpoint(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 3)? {
        return Ok(pick(u, &["*", "/a/*", "/*", "A.*", "a.b", "/a", "/a/b", "a/*"])?.to_string());
    }
    let len = u.int_in_range(0..=6)?;
    (0..len).map(|_| Ok(pick(u, &["/", "a", "b", "A", ".", "*"])?.to_string())).collect()
}

fn input(u: &mut Unstructured<'_>) -> Result<(Vec<Rule>, Option<Account>, String, String, String)> {
    let n = u.int_in_range(0..=8)?;
    let mut rules = Vec::with_capacity(n);
    for i in 0..n {
        rules.push(Rule {
            id: format!("r{i}"),
            scope: pick(u, &["", "*", "+", "a", "B", "c"])?.into(),
            resource_type: pick(u, &["service", "*", "other", "SERVICE"])?.into(),
            name: pick(u, &["*", "svc", "SVC", "other"])?.into(),
            endpoint: endpoint(u)?,
            access: if u.ratio(1, 3)? { Access::Denied } else { Access::Granted },
            priority: u.int_in_range(-2..=2)?,
        });
    }
    let account = if u.ratio(1, 4)? {
        None
    } else {
        let scopes = ["a", "b", "C"]
            .iter()
            .filter_map(|s| u.arbitrary::<bool>().ok().filter(|b| *b).map(|_| (*s).to_string()))
            .collect();
        Some(Account {
            id: "someone".into(),
            issuer_tenant: pick(u, &[TENANT, TENANT, "other", ""])?.into(),
            scopes,
            account_type: "user".into(),
        })
    };
    let ty = pick(u, &["service", "other", "Service"])?.to_string();
    let name = pick(u, &["svc", "other", "Svc"])?.to_string();
    Ok((rules, account, ty, name, endpoint(u)?))
}

fn fold_eq(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// Whether the rule endpoint `pattern` covers `endpoint` (docs/auth.md#rules).
fn covers(pattern: &str, endpoint: &str) -> bool {
    let (p, e) = (pattern.to_lowercase(), endpoint.to_lowercase());
    if p == "*" || p == e {
        return true;
    }
    if let Some(prefix) = p.strip_suffix("/*") {
        // A path wildcard: its components start the endpoint's.
        if !e.contains('/') {
            return false;
        }
        let want: Vec<&str> = prefix.split('/').collect();
        let have: Vec<&str> = e.split('/').collect();
        return have.len() >= want.len() && have[..want.len()] == want[..];
    }
    if let Some(prefix) = p.strip_suffix('*') {
        return e.starts_with(prefix);
    }
    false
}

/// SPEC §5, read plainly.
fn reference(rules: &[Rule], account: Option<&Account>, ty: &str, name: &str, endpoint: &str) -> Decision {
    let refused = if account.is_some() { Decision::Forbidden } else { Decision::Unauthorized };
    let mut matching: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.resource_type == "*" || fold_eq(&r.resource_type, ty))
        .filter(|r| r.name == "*" || fold_eq(&r.name, name))
        .filter(|r| covers(&r.endpoint, endpoint))
        .collect();
    matching.sort_by_key(|r| std::cmp::Reverse(r.priority));
    let decide = |r: &Rule| if r.access == Access::Granted { Decision::Granted } else { refused };
    for r in matching {
        if r.scope.is_empty() {
            return decide(r);
        }
        let Some(a) = account else { continue };
        if r.scope != "+" && a.issuer_tenant != TENANT {
            return refused;
        }
        if r.scope == "*" || r.scope == "+" {
            return decide(r);
        }
        if a.scopes.iter().any(|s| fold_eq(s, &r.scope)) {
            return decide(r);
        }
    }
    refused
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((rules, account, ty, name, endpoint)) = input(&mut u) else {
        return;
    };
    let set = RuleSet::new(rules.clone());
    let got = set.decide(TENANT, account.as_ref(), &ty, &name, &endpoint);
    let want = reference(&rules, account.as_ref(), &ty, &name, &endpoint);
    assert_eq!(
        got, want,
        "rules {rules:#?}\naccount {account:?}\nrequest {ty}:{name}:{endpoint}"
    );
});
