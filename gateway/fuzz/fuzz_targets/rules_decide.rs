//! AuthRule evaluation against the plain algorithm of docs/auth.md#rules (`rules::reference`, the
//! unit tests' oracle too), on arbitrary rule sets, accounts (none, the tenant's own, foreign) and
//! requests: the indexed evaluator must give the reference's decision every time. The alphabets are small so that rules and requests meet.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use microplane_gateway::auth::rules::{Access, Account, Rule, RuleSet, reference};

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

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((rules, account, ty, name, endpoint)) = input(&mut u) else {
        return;
    };
    let set = RuleSet::new(rules.clone());
    let got = set.decide(TENANT, account.as_ref(), &ty, &name, &endpoint);
    let want = reference::decide(&rules, TENANT, account.as_ref(), &ty, &name, &endpoint);
    assert_eq!(
        got, want,
        "rules {rules:#?}\naccount {account:?}\nrequest {ty}:{name}:{endpoint}"
    );
});
