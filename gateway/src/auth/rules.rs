//! AuthRule evaluation (docs/auth.md#rules).
//!
//! A [`RuleSet`] holds one tenant's rules, compiled once per routing snapshot; [`RuleSet::decide`]
//! answers one request, without allocating when its strings are ASCII and fit the stack buffers
//! (128 bytes for names, types and scopes, 256 for endpoints).
//!
//! The algorithm is Micro's `VerifyAccess` (Micro v3's `auth.VerifyAccess`) plus the trailing-`*` endpoint globs:
//!
//! 1. Keep the rules whose type, name and endpoint each equal the request's (case-insensitively)
//!    or are `*`, or whose endpoint is a wildcard covering the request's:
//!    - `P/*` (a path wildcard) covers an endpoint containing `/` whose `/`-components start with
//!      those of `P`: `/foo/*` covers `/foo`, `/foo/bar` and `/foo/bar/baz`, not `/foobar`;
//!    - any other pattern ending in `*` (a glob) covers the endpoints it is a prefix of:
//!      `Helloworld.*` covers `Helloworld.Call`. Only a trailing `*` is special.
//!
//!    Sort them by priority, highest first; at equal priority, input order is kept.
//! 2. Walk them. A public rule (scope `""`) decides at once. Without an account, non-public rules
//!    are skipped. If a rule's scope is not `+` and the account was not issued by the request's
//!    tenant, refuse at once. Scopes `*` and `+` decide at once; a named scope decides if the
//!    account holds it (case-insensitively), otherwise the walk goes on.
//! 3. Nothing decided → refuse.
//!
//! A rule that decides with [`Access::Denied`] refuses. A refusal is [`Decision::Unauthorized`]
//! (401) without an account and [`Decision::Forbidden`] (403) with one.
//!
//! Case-insensitivity is Unicode lower-casing per character (like Go's `strings.EqualFold` for all
//! practical names), with an ASCII fast path. Tenants (Kubernetes namespace names) are compared
//! exactly.
//!
//! Speed ([`RuleSet::decide`] does not walk the whole list): the first rule of the walk that
//! decides or refuses is the highest-ranked *matching* rule among those that can decide for this
//! caller: public rules for anyone; `*`/`+` rules for an account; for an account of the tenant,
//! the rules of the scopes it holds; for an account of another tenant, every named-scope rule
//! (each refuses it). [`RuleSet::new`] lower-cases and sorts the rules once (a rule's position is
//! its rank) and groups them by name (the request's name and `*`) and by those scope classes; a
//! group of more than a few rules is also indexed by endpoint pattern (exact endpoints, `*`, and
//! globs/path wildcards by prefix, keyed by a length and a rolling hash, confirmed by comparing
//! bytes). A request searches only the groups that can decide for its caller, each up to its first
//! match, and keeps the lowest position. Types and named scopes are interned as integers.

use std::collections::HashMap;

// The hasher of the index's maps: fast, deterministic, not DoS-resistant, and it need not be: the
// keys are the tenant's own rules; requests only look up.
use foldhash::fast::FixedState;

/// The resource type of every gateway request, and the default of `resource.type` (docs/auth.md#rules).
pub const DEFAULT_RESOURCE_TYPE: &str = "service";

/// The scope of a public rule: applies to anyone, even without a token.
pub const SCOPE_PUBLIC: &str = "";
/// The scope of a rule for any account issued by the request's tenant.
pub const SCOPE_ACCOUNT: &str = "*";
/// The scope of a rule for any valid account of any tenant.
pub const SCOPE_ANY_TENANT_ACCOUNT: &str = "+";

/// Request names, types and account scopes up to this many bytes are lower-cased on the stack;
/// longer (or non-ASCII) ones are lower-cased into a `String`.
const NAME_BUFFER: usize = 128;
/// Request endpoints up to this many bytes are lower-cased on the stack; longer (or non-ASCII) ones
/// are lower-cased into a `String`.
const ENDPOINT_BUFFER: usize = 256;

/// What a rule does when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// The request is allowed.
    Granted,
    /// The request is refused.
    Denied,
}

/// One AuthRule, as written in the tenant (docs/auth.md#rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's id (the AuthRule's name); not used by evaluation.
    pub id: String,
    /// `""` public, `*` any account of this tenant, `+` any account of any tenant, else a named scope.
    pub scope: String,
    /// `resource.type`: [`DEFAULT_RESOURCE_TYPE`] (the CRD's default) or `*`.
    pub resource_type: String,
    /// `resource.name`: a service name or `*`.
    pub name: String,
    /// `resource.endpoint`: `*`, an endpoint, a path wildcard (`/foo/*`) or a glob (`Helloworld.*`).
    pub endpoint: String,
    /// What the rule does when it decides.
    pub access: Access,
    /// Higher is evaluated first.
    pub priority: i32,
}

/// The caller, once its token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account id (the token's `sub`).
    pub id: String,
    /// The tenant whose issuer (or configured external issuer) vouched for the account.
    pub issuer_tenant: String,
    /// The account's scopes.
    pub scopes: Vec<String>,
    /// The account type (`user`, `service`, …).
    pub account_type: String,
}

/// The outcome of evaluating a tenant's rules for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The request may go on.
    Granted,
    /// Refused, and there is no account: 401.
    Unauthorized,
    /// Refused, and there is an account: 403.
    Forbidden,
}

/// The type id of a `*`-type rule.
const ANY_TYPE: u32 = u32::MAX;
/// The type id of a request whose type no rule names.
const UNKNOWN_TYPE: u32 = u32::MAX - 1;

/// A rule's scope, classified once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `""`.
    Public,
    /// `*`.
    OwnTenant,
    /// `+`.
    AnyTenant,
    /// Anything else: the interned id of the lower-cased scope.
    Named(u32),
}

/// A rule's endpoint, classified, lower-cased and hashed once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// `*`: every endpoint.
    Any,
    /// Equal, case-insensitively.
    Exact {
        /// Lower-cased.
        pat: Box<[u8]>,
        /// `hash(pat)`.
        hash: u64,
    },
    /// A glob `G*` (other than `*` and `P/*`), stored as `G`: covers what starts with `G`.
    Prefix {
        /// `G`, lower-cased.
        pat: Box<[u8]>,
        /// `hash(G)`.
        hash: u64,
    },
    /// `P/*`, stored as `P/`: covers what starts with `P/`, and `P` itself when `P` contains `/`
    /// (Micro: an endpoint containing `/` is covered by `<each prefix of its components>/*`).
    Path {
        /// `P/`, lower-cased.
        dir: Box<[u8]>,
        /// `hash(P/)`.
        dir_hash: u64,
        /// `Some(hash(P))` when `P` itself is covered (`P` contains `/`).
        base_hash: Option<u64>,
    },
}

impl Endpoint {
    fn new(endpoint: &str) -> Self {
        if endpoint == "*" {
            return Endpoint::Any;
        }
        let folded = fold(endpoint).into_bytes();
        match folded.strip_suffix(b"*") {
            None => Endpoint::Exact {
                hash: hash(&folded),
                pat: folded.into(),
            },
            Some(dir) if dir.ends_with(b"/") => {
                let base = &dir[..dir.len() - 1];
                Endpoint::Path {
                    dir_hash: hash(dir),
                    base_hash: base.contains(&b'/').then(|| hash(base)),
                    dir: dir.into(),
                }
            }
            Some(pat) => Endpoint::Prefix {
                hash: hash(pat),
                pat: pat.into(),
            },
        }
    }

    /// Whether the pattern covers the request's lower-cased endpoint `e`.
    #[inline]
    fn matches(&self, e: &[u8]) -> bool {
        match self {
            Endpoint::Any => true,
            Endpoint::Exact { pat, .. } => **pat == *e,
            Endpoint::Prefix { pat, .. } => e.starts_with(pat),
            Endpoint::Path { dir, base_hash, .. } => {
                e.starts_with(dir) || (base_hash.is_some() && e.len() + 1 == dir.len() && dir.starts_with(e))
            }
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Compiled {
    endpoint: Endpoint,
    /// Interned type id, or [`ANY_TYPE`].
    resource_type: u32,
    scope: Scope,
    granted: bool,
}

/// A group of rules holding at most this many is scanned rather than indexed by endpoint.
const SMALL_GROUP: usize = 8;

/// "No rule": sorts after every rule position.
const NO_RULE: u32 = u32::MAX;

/// Some rules of one name (or of `*`) sharing a scope class, as ascending positions in
/// [`RuleSet::rules`], indexed by endpoint when there are more than [`SMALL_GROUP`].
#[derive(Debug, Clone, Default)]
struct Group {
    all: Vec<u32>,
    index: Option<Box<EndpointIndex>>,
}

/// A group's rules by endpoint pattern; every list ascending. A rule `P/*` is in `prefix` under
/// `P/` and, when it covers `P` itself, in `exact` under `P`.
#[derive(Debug, Clone, Default)]
struct EndpointIndex {
    /// Endpoint `*`.
    any: Box<[u32]>,
    /// [`key`] of the lower-cased endpoint → the rules for exactly it.
    exact: KeyMap<Box<[u32]>>,
    /// [`key`] of a lower-cased prefix → the glob and path rules with that prefix.
    prefix: KeyMap<Box<[u32]>>,
    /// The distinct lengths of the prefixes in `prefix`, ascending.
    prefix_lens: Box<[usize]>,
}

impl Group {
    /// Builds the endpoint index once all rules are in (they arrive in ascending order).
    fn seal(&mut self, rules: &[Compiled]) {
        if self.all.len() <= SMALL_GROUP {
            return;
        }
        let mut any = Vec::new();
        let mut exact: KeyMap<Vec<u32>> = KeyMap::default();
        let mut prefix: KeyMap<Vec<u32>> = KeyMap::default();
        let mut lens = Vec::new();
        for &pos in &self.all {
            let Some(rule) = rules.get(pos as usize) else { continue };
            match &rule.endpoint {
                Endpoint::Any => any.push(pos),
                Endpoint::Exact { pat, hash } => exact.entry(key(pat.len(), *hash)).or_default().push(pos),
                Endpoint::Prefix { pat, hash } => {
                    prefix.entry(key(pat.len(), *hash)).or_default().push(pos);
                    lens.push(pat.len());
                }
                Endpoint::Path {
                    dir,
                    dir_hash,
                    base_hash,
                } => {
                    prefix.entry(key(dir.len(), *dir_hash)).or_default().push(pos);
                    lens.push(dir.len());
                    if let Some(base_hash) = base_hash {
                        exact.entry(key(dir.len() - 1, *base_hash)).or_default().push(pos);
                    }
                }
            }
        }
        lens.sort_unstable();
        lens.dedup();
        let boxed = |m: KeyMap<Vec<u32>>| m.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect();
        self.index = Some(Box::new(EndpointIndex {
            any: any.into_boxed_slice(),
            exact: boxed(exact),
            prefix: boxed(prefix),
            prefix_lens: lens.into_boxed_slice(),
        }));
    }
}

/// The rules of one name (or of `*`), grouped so that a request looks only at the rules that
/// can decide for its caller.
#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Scope `""`.
    public: Group,
    /// Scopes `*` and `+`.
    account: Group,
    /// Every named scope (any of them refuses an account of another tenant).
    named: Group,
    /// Each named scope's rules, by ascending scope id.
    by_scope: Vec<(u32, Group)>,
}

impl Bucket {
    fn add(&mut self, pos: u32, scope: Scope) {
        match scope {
            Scope::Public => self.public.all.push(pos),
            Scope::OwnTenant | Scope::AnyTenant => self.account.all.push(pos),
            Scope::Named(id) => {
                self.named.all.push(pos);
                match self.by_scope.binary_search_by_key(&id, |(s, _)| *s) {
                    Ok(i) => self.by_scope[i].1.all.push(pos),
                    Err(i) => self.by_scope.insert(
                        i,
                        (
                            id,
                            Group {
                                all: vec![pos],
                                index: None,
                            },
                        ),
                    ),
                }
            }
        }
    }

    fn seal(&mut self, rules: &[Compiled]) {
        self.public.seal(rules);
        self.account.seal(rules);
        self.named.seal(rules);
        for (_, group) in &mut self.by_scope {
            group.seal(rules);
        }
    }

    /// The group of named scope `id`.
    fn scope(&self, id: u32) -> Option<&Group> {
        self.by_scope
            .binary_search_by_key(&id, |(s, _)| *s)
            .ok()
            .and_then(|i| self.by_scope.get(i))
            .map(|(_, g)| g)
    }
}

/// One tenant's rules, compiled once per routing snapshot.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// The rules, sorted by priority (highest first), stable: a rule's position is its rank.
    rules: Vec<Compiled>,
    /// Lower-cased name → the rules with that exact name.
    by_name: StrMap<Bucket>,
    /// The `*`-name rules.
    any_name: Bucket,
    /// Lower-cased type → id.
    types: StrMap<u32>,
    /// Lower-cased named scope → id.
    scopes: StrMap<u32>,
}

/// Interns `key` in `ids`, returning its id. Ids stay below [`UNKNOWN_TYPE`]: there are no more
/// distinct keys than rules, and [`RuleSet::new`] compiles fewer rules than that.
fn intern(ids: &mut StrMap<u32>, key: String) -> u32 {
    let next = u32::try_from(ids.len()).unwrap_or(UNKNOWN_TYPE);
    *ids.entry(key.into_bytes().into()).or_insert(next)
}

/// A request's type id and lower-cased endpoint.
struct Request<'a> {
    resource_type: u32,
    endpoint: &'a [u8],
    /// `hash(endpoint)`.
    hash: u64,
}

impl RuleSet {
    /// Compiles a tenant's rules. At equal priority, input order is the evaluation order.
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut rules = rules;
        // Stable: equal priorities keep input order.
        rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
        let mut set = RuleSet::default();
        for (pos, rule) in rules.iter().enumerate() {
            // At most UNKNOWN_TYPE rules (positions and interned ids stay below the reserved values);
            // more cannot be indexed.
            let Some(pos) = u32::try_from(pos).ok().filter(|&p| p < UNKNOWN_TYPE) else {
                break;
            };
            let scope = match rule.scope.as_str() {
                SCOPE_PUBLIC => Scope::Public,
                SCOPE_ACCOUNT => Scope::OwnTenant,
                SCOPE_ANY_TENANT_ACCOUNT => Scope::AnyTenant,
                named => Scope::Named(intern(&mut set.scopes, fold(named))),
            };
            let bucket = if rule.name == "*" {
                &mut set.any_name
            } else {
                set.by_name.entry(fold(&rule.name).into_bytes().into()).or_default()
            };
            bucket.add(pos, scope);
            set.rules.push(Compiled {
                endpoint: Endpoint::new(&rule.endpoint),
                resource_type: match rule.resource_type.as_str() {
                    "*" => ANY_TYPE,
                    t => intern(&mut set.types, fold(t)),
                },
                scope,
                granted: rule.access == Access::Granted,
            });
        }
        for bucket in set.by_name.values_mut() {
            bucket.seal(&set.rules);
        }
        set.any_name.seal(&set.rules);
        set
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides a request for `resource_type:name:endpoint` in `tenant`, by `account` (`None`:
    /// no valid token).
    ///
    /// The first rule of the walk (docs/auth.md#rules) that decides or refuses is the lowest-positioned
    /// matching rule among: public rules (anyone); for an account, `*`/`+` rules; and for an
    /// account of this tenant the rules of the scopes it holds, for one of another tenant every
    /// named-scope rule (which refuses it). So only those groups are searched, each up to its
    /// first match.
    pub fn decide(
        &self,
        tenant: &str,
        account: Option<&Account>,
        resource_type: &str,
        name: &str,
        endpoint: &str,
    ) -> Decision {
        let refused = if account.is_some() {
            Decision::Forbidden
        } else {
            Decision::Unauthorized
        };
        let own_tenant = account.is_some_and(|a| a.issuer_tenant == tenant);

        let mut stack = [0u8; NAME_BUFFER];
        let mut heap = String::new();
        let named = self.by_name.get(fold_in(name, &mut stack, &mut heap));
        let resource_type = self.types.get(fold_in(resource_type, &mut stack, &mut heap)).copied();

        let mut ep_stack = [0u8; ENDPOINT_BUFFER];
        let mut ep_heap = String::new();
        let endpoint = fold_in(endpoint, &mut ep_stack, &mut ep_heap);
        let req = Request {
            resource_type: resource_type.unwrap_or(UNKNOWN_TYPE),
            endpoint,
            hash: hash(endpoint),
        };

        let mut held_stack = [0u32; 32];
        let mut held_heap = Vec::new();
        let held: &[u32] = match account {
            Some(account)
                if own_tenant
                    && (!self.any_name.by_scope.is_empty() || named.is_some_and(|b| !b.by_scope.is_empty())) =>
            {
                self.held(account, &mut held_stack, &mut held_heap)
            }
            _ => &[],
        };

        let mut best = NO_RULE;
        for bucket in [named, Some(&self.any_name)].into_iter().flatten() {
            best = self.first(&bucket.public, &req, best);
            if account.is_none() {
                continue;
            }
            best = self.first(&bucket.account, &req, best);
            if !own_tenant {
                best = self.first(&bucket.named, &req, best);
            } else if held.len() <= bucket.by_scope.len() {
                for group in held.iter().filter_map(|&id| bucket.scope(id)) {
                    best = self.first(group, &req, best);
                }
            } else {
                for (_, group) in bucket.by_scope.iter().filter(|(id, _)| held.binary_search(id).is_ok()) {
                    best = self.first(group, &req, best);
                }
            }
        }

        let Some(rule) = self.rules.get(best as usize) else {
            return refused;
        };
        let decides = match rule.scope {
            Scope::Public | Scope::AnyTenant => true,
            Scope::OwnTenant | Scope::Named(_) => own_tenant,
        };
        if decides && rule.granted {
            Decision::Granted
        } else {
            refused
        }
    }

    /// The ids of the scopes `account` holds, sorted (duplicates kept).
    fn held<'a>(&self, account: &Account, stack: &'a mut [u32; 32], heap: &'a mut Vec<u32>) -> &'a [u32] {
        let mut buf = [0u8; NAME_BUFFER];
        let mut folded = String::new();
        let mut n = 0;
        for scope in &account.scopes {
            let Some(&id) = self.scopes.get(fold_in(scope, &mut buf, &mut folded)) else {
                continue;
            };
            match stack.get_mut(n) {
                Some(slot) if heap.is_empty() => {
                    *slot = id;
                    n += 1;
                }
                _ => {
                    if heap.is_empty() {
                        heap.extend_from_slice(&stack[..n]);
                    }
                    heap.push(id);
                }
            }
        }
        let held = if heap.is_empty() {
            &mut stack[..n]
        } else {
            &mut heap[..]
        };
        held.sort_unstable();
        held
    }

    /// The lowest position below `best` of a rule of `group` matching `req`, else `best`.
    fn first(&self, group: &Group, req: &Request<'_>, best: u32) -> u32 {
        let Some(index) = &group.index else {
            return self.scan(&group.all, req, best);
        };
        let mut best = self.scan(&index.any, req, best);
        let e = req.endpoint;
        if let Some(list) = index.exact.get(&key(e.len(), req.hash)) {
            best = self.scan(list, req, best);
        }
        // The hash of each prefix of `e` whose length is one of the patterns', rolled forward.
        let (mut h, mut hashed) = (0, 0);
        for &len in index.prefix_lens.iter().take_while(|&&len| len <= e.len()) {
            h = e.get(hashed..len).map_or(h, |more| roll(h, more));
            hashed = len;
            if let Some(list) = index.prefix.get(&key(len, h)) {
                best = self.scan(list, req, best);
            }
        }
        best
    }

    /// The first position below `best` in the ascending `list` of a rule matching `req`, else
    /// `best`.
    #[inline]
    fn scan(&self, list: &[u32], req: &Request<'_>, best: u32) -> u32 {
        for &pos in list {
            if pos >= best {
                break;
            }
            if let Some(rule) = self.rules.get(pos as usize)
                && (rule.resource_type == ANY_TYPE || rule.resource_type == req.resource_type)
                && rule.endpoint.matches(req.endpoint)
            {
                return pos;
            }
        }
        best
    }
}

/// Lower-cases per character (Unicode), the form every compared string takes.
fn fold(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.chars().flat_map(char::to_lowercase).collect()
    }
}

/// Lower-cases `s` into `stack` when it is ASCII and fits, else into `heap`.
fn fold_in<'a>(s: &str, stack: &'a mut [u8], heap: &'a mut String) -> &'a [u8] {
    match stack.get_mut(..s.len()) {
        Some(out) if s.is_ascii() => {
            out.copy_from_slice(s.as_bytes());
            out.make_ascii_lowercase();
            out
        }
        _ => {
            *heap = fold(s);
            heap.as_bytes()
        }
    }
}

/// The multiplier of the polynomial hash.
const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// A polynomial hash, so that the hashes of a string's prefixes come out of one pass ([`roll`]).
/// It only narrows the search: a match is always confirmed by comparing bytes.
fn hash(bytes: &[u8]) -> u64 {
    roll(0, bytes)
}

/// `hash(a ++ more)` from `h == hash(a)`.
fn roll(h: u64, more: &[u8]) -> u64 {
    more.iter()
        .fold(h, |h, &b| h.wrapping_mul(HASH_MUL).wrapping_add(u64::from(b)))
}

/// The key of a lower-cased string (or prefix) of `len` bytes whose [`hash`] is `hash`.
fn key(len: usize, hash: u64) -> u64 {
    hash ^ (len as u64).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

/// A map keyed by [`key`]s.
type KeyMap<V> = HashMap<u64, V, FixedState>;
/// A map keyed by lower-cased strings.
type StrMap<V> = HashMap<Box<[u8]>, V, FixedState>;

/// docs/auth.md#rules written out directly, one rule after another (Micro's `VerifyAccess` plus
/// the trailing-`*` globs): the oracle [`RuleSet::decide`] is checked against, by the unit tests
/// and by the `rules_decide` fuzz target (feature `rules-reference`). Slow; never on a request path.
#[cfg(any(test, feature = "rules-reference"))]
#[doc(hidden)]
pub mod reference {
    use super::{Access, Account, Decision, Rule};

    /// The decision for a request of type `ty` to `name`/`ep` in `tenant` by `account`.
    pub fn decide(rules: &[Rule], tenant: &str, account: Option<&Account>, ty: &str, name: &str, ep: &str) -> Decision {
        let eq = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
        let mut endpoints = vec!["*".to_string(), ep.to_string()];
        if ep.contains('/') {
            let comps: Vec<&str> = ep.split('/').collect();
            for i in 1..=comps.len() {
                endpoints.push(format!("{}/*", comps[..i].join("/")));
            }
        }
        let glob = |p: &str| {
            p.len() > 1 && p.ends_with('*') && ep.to_lowercase().starts_with(&p[..p.len() - 1].to_lowercase())
        };
        let mut kept: Vec<&Rule> = rules
            .iter()
            .filter(|r| {
                ["*", ty].iter().any(|t| eq(t, &r.resource_type))
                    && ["*", name].iter().any(|n| eq(n, &r.name))
                    && (endpoints.iter().any(|e| eq(e, &r.endpoint)) || glob(&r.endpoint))
            })
            .collect();
        kept.sort_by_key(|r| std::cmp::Reverse(r.priority));
        let refused = if account.is_some() {
            Decision::Forbidden
        } else {
            Decision::Unauthorized
        };
        let verdict = |r: &Rule| {
            if r.access == Access::Granted {
                Decision::Granted
            } else {
                refused
            }
        };
        for rule in kept {
            if rule.scope.is_empty() {
                return verdict(rule);
            }
            let Some(a) = account else { continue };
            if rule.scope != "+" && a.issuer_tenant != tenant {
                return refused;
            }
            if rule.scope == "*" || rule.scope == "+" || a.scopes.iter().any(|s| eq(s, &rule.scope)) {
                return verdict(rule);
            }
        }
        refused
    }
}

#[cfg(test)]
mod tests {
    use super::Access::{Denied as D, Granted as G};
    use super::Decision::{Forbidden, Granted, Unauthorized};
    use super::*;

    const T: &str = "acme";

    /// A rule from Micro's CLI resource form `type:name:endpoint`.
    fn r(scope: &str, resource: &str, access: Access, priority: i32) -> Rule {
        let mut parts = resource.splitn(3, ':');
        let mut next = || parts.next().unwrap().to_string();
        let (resource_type, name, endpoint) = (next(), next(), next());
        Rule {
            id: format!("{scope}/{resource}"),
            scope: scope.into(),
            resource_type,
            name,
            endpoint,
            access,
            priority,
        }
    }

    fn acc(tenant: &str, scopes: &[&str]) -> Option<Account> {
        Some(Account {
            id: "alice".into(),
            issuer_tenant: tenant.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            account_type: "user".into(),
        })
    }

    fn own(scopes: &[&str]) -> Option<Account> {
        acc(T, scopes)
    }

    fn other(scopes: &[&str]) -> Option<Account> {
        acc("globex", scopes)
    }

    struct Case {
        name: &'static str,
        rules: Vec<Rule>,
        account: Option<Account>,
        resource: &'static str,
        want: Decision,
    }

    fn case(
        name: &'static str,
        rules: Vec<Rule>,
        account: Option<Account>,
        resource: &'static str,
        want: Decision,
    ) -> Case {
        Case {
            name,
            rules,
            account,
            resource,
            want,
        }
    }

    fn decide(rules: Vec<Rule>, account: Option<&Account>, resource: &str) -> Decision {
        let mut parts = resource.splitn(3, ':');
        let (t, n, e) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        RuleSet::new(rules).decide(T, account, t, n, e)
    }

    const HW: &str = "service:helloworld:Helloworld.Call";

    fn table() -> Vec<Case> {
        vec![
            // 3. Nothing decided → refuse: 401 without an account, 403 with one.
            case("no rules, anonymous", vec![], None, HW, Unauthorized),
            case("no rules, account", vec![], own(&["admin"]), HW, Forbidden),
            case(
                "no matching rule, account",
                vec![r("", "service:other:*", G, 0)],
                own(&[]),
                HW,
                Forbidden,
            ),
            // Public rules decide at once, for everyone.
            case("public grant, anonymous", vec![r("", "*:*:*", G, 0)], None, HW, Granted),
            case(
                "public grant, own account",
                vec![r("", "*:*:*", G, 0)],
                own(&[]),
                HW,
                Granted,
            ),
            case(
                "public grant, other tenant's account",
                vec![r("", "*:*:*", G, 0)],
                other(&[]),
                HW,
                Granted,
            ),
            case(
                "public deny, anonymous",
                vec![r("", "*:*:*", D, 0)],
                None,
                HW,
                Unauthorized,
            ),
            case(
                "public deny refuses a logged-in admin before a lower `*` grant",
                vec![r("*", "*:*:*", G, -1), r("", "*:*:*", D, 0)],
                own(&["admin"]),
                HW,
                Forbidden,
            ),
            // `*`: any account issued by this tenant.
            case(
                "`*` grants own account",
                vec![r("*", "*:*:*", G, 0)],
                own(&[]),
                HW,
                Granted,
            ),
            case(
                "`*` deny refuses own account",
                vec![r("*", "*:*:*", D, 0)],
                own(&[]),
                HW,
                Forbidden,
            ),
            case(
                "`*` skipped without account",
                vec![r("*", "*:*:*", G, 0)],
                None,
                HW,
                Unauthorized,
            ),
            case(
                "`*` refuses another tenant's account at once, before a lower public grant",
                vec![r("*", "*:*:*", G, 1), r("", "*:*:*", G, 0)],
                other(&[]),
                HW,
                Forbidden,
            ),
            // `+`: any account of any tenant.
            case(
                "`+` grants another tenant's account",
                vec![r("+", "*:*:*", G, 0)],
                other(&[]),
                HW,
                Granted,
            ),
            case(
                "`+` grants own account",
                vec![r("+", "*:*:*", G, 0)],
                own(&[]),
                HW,
                Granted,
            ),
            case(
                "`+` deny decides at once, before a lower public grant",
                vec![r("+", "*:*:*", D, 1), r("", "*:*:*", G, 0)],
                other(&[]),
                HW,
                Forbidden,
            ),
            case(
                "`+` skipped without account",
                vec![r("+", "*:*:*", G, 0)],
                None,
                HW,
                Unauthorized,
            ),
            // Named scopes.
            case(
                "named scope held grants",
                vec![r("admin", "*:*:*", G, 0)],
                own(&["user", "admin"]),
                HW,
                Granted,
            ),
            case(
                "named scope not held, nothing else",
                vec![r("admin", "*:*:*", G, 0)],
                own(&["user"]),
                HW,
                Forbidden,
            ),
            case(
                "named scope not held falls through to the next rule",
                vec![r("admin", "*:*:*", D, 1), r("*", "*:*:*", G, 0)],
                own(&["user"]),
                HW,
                Granted,
            ),
            case(
                "denied named scope held refuses before a lower grant",
                vec![r("admin", "*:*:*", D, 1), r("*", "*:*:*", G, 0)],
                own(&["admin"]),
                HW,
                Forbidden,
            ),
            case(
                "named scope held by another tenant's account refuses at once",
                vec![r("admin", "*:*:*", G, 1), r("", "*:*:*", G, 0)],
                other(&["admin"]),
                HW,
                Forbidden,
            ),
            case(
                "named scope skipped without account, then a public rule",
                vec![r("admin", "*:*:*", G, 1), r("", "*:*:*", D, 0)],
                None,
                HW,
                Unauthorized,
            ),
            case(
                "anonymous skips every non-public rule and reaches a public grant",
                vec![
                    r("*", "*:*:*", D, 3),
                    r("admin", "*:*:*", D, 2),
                    r("+", "*:*:*", D, 1),
                    r("", "*:*:*", G, 0),
                ],
                None,
                HW,
                Granted,
            ),
            // Priority, then input order.
            case(
                "priority: grant first",
                vec![r("*", "*:*:*", D, 0), r("*", "*:*:*", G, 1)],
                own(&[]),
                HW,
                Granted,
            ),
            case(
                "priority: deny first",
                vec![r("*", "*:*:*", G, 0), r("*", "*:*:*", D, 1)],
                own(&[]),
                HW,
                Forbidden,
            ),
            case(
                "priority: negative priorities",
                vec![r("*", "*:*:*", D, -10), r("*", "*:*:*", G, -5)],
                own(&[]),
                HW,
                Granted,
            ),
            case(
                "priority: a `*`-name rule above the service's own rule",
                vec![r("*", "service:helloworld:*", G, 0), r("*", "*:*:*", D, 7)],
                own(&[]),
                HW,
                Forbidden,
            ),
            case(
                "equal priority: grant listed first",
                vec![r("*", "*:*:*", G, 0), r("*", "*:*:*", D, 0)],
                own(&[]),
                HW,
                Granted,
            ),
            case(
                "equal priority: deny listed first",
                vec![r("*", "*:*:*", D, 0), r("*", "*:*:*", G, 0)],
                own(&[]),
                HW,
                Forbidden,
            ),
            case(
                "equal priority: `*`-name deny listed before the service's grant",
                vec![r("*", "*:*:*", D, 0), r("*", "service:helloworld:*", G, 0)],
                own(&[]),
                HW,
                Forbidden,
            ),
            case(
                "equal priority: service's grant listed before a `*`-name deny",
                vec![r("*", "service:helloworld:*", G, 0), r("*", "*:*:*", D, 0)],
                own(&[]),
                HW,
                Granted,
            ),
            // Case-insensitivity, one part at a time.
            case(
                "type case-insensitive",
                vec![r("", "SERVICE:helloworld:Helloworld.Call", G, 0)],
                None,
                HW,
                Granted,
            ),
            case(
                "name case-insensitive",
                vec![r("", "service:HelloWorld:Helloworld.Call", G, 0)],
                None,
                HW,
                Granted,
            ),
            case(
                "request name case-insensitive",
                vec![r("", "service:helloworld:Helloworld.Call", G, 0)],
                None,
                "service:HELLOWORLD:Helloworld.Call",
                Granted,
            ),
            case(
                "endpoint case-insensitive",
                vec![r("", "service:helloworld:HELLOWORLD.call", G, 0)],
                None,
                HW,
                Granted,
            ),
            case(
                "scope case-insensitive",
                vec![r("Admin", "*:*:*", G, 0)],
                own(&["aDMIN"]),
                HW,
                Granted,
            ),
            case(
                "unicode name case-insensitive",
                vec![r("", "service:Ünïcode:*", G, 0)],
                None,
                "service:üNÏCODE:X",
                Granted,
            ),
            // Exact parts and `*`.
            case(
                "`*` type",
                vec![r("", "*:helloworld:Helloworld.Call", G, 0)],
                None,
                HW,
                Granted,
            ),
            case(
                "other type",
                vec![r("", "function:helloworld:Helloworld.Call", G, 0)],
                None,
                HW,
                Unauthorized,
            ),
            case(
                "`*` name",
                vec![r("", "service:*:Helloworld.Call", G, 0)],
                None,
                HW,
                Granted,
            ),
            case(
                "other name",
                vec![r("", "service:greeter:Helloworld.Call", G, 0)],
                None,
                HW,
                Unauthorized,
            ),
            case(
                "name is not a prefix glob",
                vec![r("", "service:hello*:*", G, 0)],
                None,
                HW,
                Unauthorized,
            ),
            case(
                "`*` endpoint",
                vec![r("", "service:helloworld:*", G, 0)],
                None,
                HW,
                Granted,
            ),
            case(
                "other endpoint",
                vec![r("", "service:helloworld:Helloworld.Stream", G, 0)],
                None,
                HW,
                Unauthorized,
            ),
            // Path wildcards.
            case(
                "`/foo/*` covers /foo/bar",
                vec![r("", "service:web:/foo/*", G, 0)],
                None,
                "service:web:/foo/bar",
                Granted,
            ),
            case(
                "`/foo/*` covers /foo/bar/baz",
                vec![r("", "service:web:/foo/*", G, 0)],
                None,
                "service:web:/foo/bar/baz",
                Granted,
            ),
            case(
                "`/foo/*` covers /foo",
                vec![r("", "service:web:/foo/*", G, 0)],
                None,
                "service:web:/foo",
                Granted,
            ),
            case(
                "`/foo/*` covers /FOO/Bar",
                vec![r("", "service:web:/foo/*", G, 0)],
                None,
                "service:web:/FOO/Bar",
                Granted,
            ),
            case(
                "`/foo/*` not /foobar",
                vec![r("", "service:web:/foo/*", G, 0)],
                None,
                "service:web:/foobar",
                Unauthorized,
            ),
            case(
                "`/foo/*` not /bar/foo",
                vec![r("", "service:web:/foo/*", G, 0)],
                None,
                "service:web:/bar/foo",
                Unauthorized,
            ),
            case(
                "`/*` covers /foo/bar",
                vec![r("", "service:web:/*", G, 0)],
                None,
                "service:web:/foo/bar",
                Granted,
            ),
            case(
                "`/*` not a dotted endpoint",
                vec![r("", "service:web:/*", G, 0)],
                None,
                "service:web:Foo.Bar",
                Unauthorized,
            ),
            case(
                "`/foo/bar/*` covers /foo/bar",
                vec![r("", "service:web:/foo/bar/*", G, 0)],
                None,
                "service:web:/foo/bar",
                Granted,
            ),
            case(
                "`foo/*` not foo (no `/` in it)",
                vec![r("", "service:web:foo/*", G, 0)],
                None,
                "service:web:foo",
                Unauthorized,
            ),
            case(
                "`/foo` is exact",
                vec![r("", "service:web:/foo", G, 0)],
                None,
                "service:web:/foo/bar",
                Unauthorized,
            ),
            // Globs.
            case(
                "`Helloworld.*` covers Helloworld.Call",
                vec![r("", "service:helloworld:Helloworld.*", G, 0)],
                None,
                HW,
                Granted,
            ),
            case(
                "`Helloworld.*` covers helloworld.STREAM",
                vec![r("", "service:helloworld:Helloworld.*", G, 0)],
                None,
                "service:helloworld:helloworld.STREAM",
                Granted,
            ),
            case(
                "`Helloworld.*` not HelloworldAdmin.Call",
                vec![r("", "service:helloworld:Helloworld.*", G, 0)],
                None,
                "service:helloworld:HelloworldAdmin.Call",
                Unauthorized,
            ),
            case(
                "`Helloworld.*` not Greeter.Call",
                vec![r("", "service:helloworld:Helloworld.*", G, 0)],
                None,
                "service:helloworld:Greeter.Call",
                Unauthorized,
            ),
            case(
                "`helloworld:Helloworld.*` not another service's endpoint",
                vec![r("", "service:helloworld:Helloworld.*", G, 0)],
                None,
                "service:greeter:Helloworld.Call",
                Unauthorized,
            ),
            case(
                "`Hello*` covers Helloworld.Call",
                vec![r("", "service:helloworld:Hello*", G, 0)],
                None,
                HW,
                Granted,
            ),
            case(
                "only a trailing `*` is special",
                vec![r("", "service:helloworld:*.Call", G, 0)],
                None,
                HW,
                Unauthorized,
            ),
        ]
    }

    #[test]
    fn spec_table() {
        let cases = table();
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|c| {
                let got = decide(c.rules.clone(), c.account.as_ref(), c.resource);
                (got != c.want).then(|| format!("{}: got {got:?}, want {:?}", c.name, c.want))
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn tenant_is_the_request_tenant() {
        let rules = RuleSet::new(vec![r("*", "*:*:*", G, 0)]);
        let a = own(&[]);
        assert_eq!(rules.decide(T, a.as_ref(), "service", "x", "y"), Granted);
        assert_eq!(rules.decide("globex", a.as_ref(), "service", "x", "y"), Forbidden);
    }

    #[test]
    fn beyond_the_stack_buffers() {
        // Names, types and scopes longer than NAME_BUFFER, endpoints longer than ENDPOINT_BUFFER.
        let long = "n".repeat(NAME_BUFFER * 2);
        let long_ep = format!("/{}", "e".repeat(ENDPOINT_BUFFER * 2));
        let rules = RuleSet::new(vec![
            r("", &format!("{long}:{long}:{long_ep}/*"), G, 0),
            r(&long, "*:x:*", G, 0),
        ]);
        let (up, up_ep) = (long.to_uppercase(), long_ep.to_uppercase());
        assert_eq!(rules.decide(T, None, &up, &up, &format!("{up_ep}/X")), Granted);
        assert_eq!(rules.decide(T, None, &up, &up, &up_ep[..up_ep.len() - 1]), Unauthorized);
        assert_eq!(
            rules.decide(T, None, &up, &long[1..], &format!("{up_ep}/X")),
            Unauthorized
        );
        assert_eq!(
            rules.decide(T, None, &long[1..], &up, &format!("{up_ep}/X")),
            Unauthorized
        );
        assert_eq!(rules.decide(T, own(&[&up]).as_ref(), "service", "x", "y"), Granted);
        assert_eq!(
            rules.decide(T, own(&[&long[1..]]).as_ref(), "service", "x", "y"),
            Forbidden
        );
    }

    #[test]
    fn non_ascii_endpoints_and_scopes() {
        let rules = RuleSet::new(vec![
            r("", "service:x:/Ünï/*", G, 1),
            r("Ärger", "service:x:Ünï.Call", G, 0),
        ]);
        assert_eq!(rules.decide(T, None, "service", "x", "/üNÏ/ä"), Granted);
        assert_eq!(rules.decide(T, None, "service", "x", "/üNÏx"), Unauthorized);
        assert_eq!(
            rules.decide(T, own(&["äRGER"]).as_ref(), "service", "x", "üNÏ.CALL"),
            Granted
        );
        assert_eq!(
            rules.decide(T, own(&["ärgerlich"]).as_ref(), "service", "x", "üNÏ.CALL"),
            Forbidden
        );
    }

    #[test]
    fn many_distinct_scopes() {
        // 2000 named scopes in one group: `s{i}` grants when i % 100 == 0, else denies; then a
        // denying `*` rule.
        let mut rules: Vec<Rule> = (0..2000)
            .map(|i| r(&format!("s{i}"), "*:*:*", if i % 100 == 0 { G } else { D }, 1))
            .collect();
        rules.push(r("*", "*:*:*", D, 0));
        let set = RuleSet::new(rules);
        let decide = |scopes: Vec<String>| {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            set.decide(T, own(&scopes).as_ref(), "service", "x", "y")
        };
        let scopes = |range: std::ops::Range<i32>| range.map(|i| format!("S{i}")).collect::<Vec<_>>();
        assert_eq!(decide(vec!["nope".into()]), Forbidden);
        assert_eq!(decide(vec!["nope".into(), "S1900".into()]), Granted);
        assert_eq!(decide(vec!["s1999".into(), "nope".into()]), Forbidden);
        // More held scopes than the stack buffer of held ids (32): the first held scope in rule
        // order decides, whatever the account's order.
        assert_eq!(decide(scopes(1000..1040)), Granted);
        assert_eq!(decide(scopes(1000..1040).into_iter().rev().collect()), Granted);
        assert_eq!(decide(scopes(1001..1041)), Forbidden);
    }

    #[test]
    fn len_and_is_empty() {
        assert!(RuleSet::new(vec![]).is_empty());
        assert!(RuleSet::default().is_empty());
        let rules = RuleSet::new(vec![
            r("", "*:*:*", G, 0),
            r("*", "service:a:*", D, 1),
            r("+", "service:A:*", D, 1),
        ]);
        assert_eq!(rules.len(), 3);
        assert!(!rules.is_empty());
    }

    #[test]
    fn matches_the_reference() {
        // Random rule sets and requests, small and large (indexed groups), against `reference`.
        const TYPES: &[&str] = &["service", "SERVICE", "*", "function"];
        const NAMES: &[&str] = &["helloworld", "HelloWorld", "greeter", "*", "*", "web", "Ünï"];
        const RULE_ENDPOINTS: &[&str] = &[
            "*",
            "Helloworld.Call",
            "helloworld.call",
            "Helloworld.*",
            "Hello*",
            "/foo/*",
            "/FOO/bar/*",
            "/*",
            "/foo",
            "foo/*",
            "/foo/bar",
            "Greeter.*",
            "",
            "Helloworld.Stream",
            "ÜNÏ.*",
            "*.Call",
            "/foo/bar/baz/*",
        ];
        const REQ_ENDPOINTS: &[&str] = &[
            "Helloworld.Call",
            "HELLOWORLD.STREAM",
            "/foo",
            "/foo/bar",
            "/Foo/Bar/baz",
            "/foobar",
            "foo",
            "foo/x",
            "",
            "Greeter.Call",
            "/",
            "ünï.x",
        ];
        const SCOPES: &[&str] = &["", "*", "+", "admin", "ADMIN", "user"];
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let pick = |rng: &mut fastrand::Rng, xs: &[&'static str]| xs[rng.usize(..xs.len())];
        for round in 0..24_000 {
            // Mostly small sets; some large enough for groups to be indexed by endpoint.
            let count = if round % 6 == 0 {
                rng.usize(30..150)
            } else {
                rng.usize(0..8)
            };
            let rules: Vec<Rule> = (0..count)
                .map(|_| {
                    let access = if rng.bool() { G } else { D };
                    Rule {
                        id: String::new(),
                        scope: pick(&mut rng, SCOPES).into(),
                        resource_type: pick(&mut rng, TYPES).into(),
                        name: pick(&mut rng, NAMES).into(),
                        endpoint: pick(&mut rng, RULE_ENDPOINTS).into(),
                        access,
                        priority: rng.i32(-2..=2),
                    }
                })
                .collect();
            let account = match rng.u8(0..3) {
                0 => None,
                n => {
                    let scopes: Vec<&str> = (0..rng.usize(0..3))
                        .map(|_| pick(&mut rng, &["Admin", "user", "ops"]))
                        .collect();
                    acc(if n == 1 { T } else { "globex" }, &scopes)
                }
            };
            let (ty, name, ep) = (
                pick(&mut rng, TYPES),
                pick(&mut rng, NAMES),
                pick(&mut rng, REQ_ENDPOINTS),
            );
            let want = super::reference::decide(&rules, T, account.as_ref(), ty, name, ep);
            let got = RuleSet::new(rules.clone()).decide(T, account.as_ref(), ty, name, ep);
            assert_eq!(got, want, "{ty}:{name}:{ep} by {account:?} with {rules:#?}");
        }
    }
}
