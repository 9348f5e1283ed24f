//! Candidate indexes: each maps one side of a request (caller, path, egress host) to the
//! rules that *could* match on that side. The engine asks two indexes, scans the smaller
//! candidate set and evaluates those rules fully, so an index only has to be a superset.

use std::collections::BTreeMap;
use std::net::IpAddr;

use identity::SpiffeId;

use crate::cidr::{mask_v4, mask_v6};
use crate::dns::Host;
use crate::model::{Destination, IdentityMatcher, PathMatcher, RequestMatcher};
use crate::path::NormalizedPath;
use crate::route::TemplateSegment;

use super::RuleId;
use crate::hasher::FxHashMap as HashMap;

/// Appends `rule` unless it is already last (rules are inserted in increasing order).
fn push(list: &mut Vec<RuleId>, rule: RuleId) {
    if list.last() != Some(&rule) {
        list.push(rule);
    }
}

/// How many candidate lists fit without allocating; a typical lookup yields 1–4.
const INLINE_LISTS: usize = 8;

/// Rule lists gathered for one request side, with their total length. The first
/// [`INLINE_LISTS`] lists live on the stack, so a decision normally does not allocate here.
pub(super) struct Candidates<'a> {
    inline: [&'a [RuleId]; INLINE_LISTS],
    inline_len: usize,
    spill: Vec<&'a [RuleId]>,
    len: usize,
}

impl<'a> Candidates<'a> {
    pub(super) fn new() -> Self {
        Candidates {
            inline: [&[]; INLINE_LISTS],
            inline_len: 0,
            spill: Vec::new(),
            len: 0,
        }
    }

    fn add(&mut self, list: &'a [RuleId]) {
        if list.is_empty() {
            return;
        }
        self.len += list.len();
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = list;
                self.inline_len += 1;
            }
            None => self.spill.push(list),
        }
    }

    /// Total number of (possibly repeated) candidates.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = RuleId> + '_ {
        self.inline[..self.inline_len]
            .iter()
            .chain(&self.spill)
            .flat_map(|l| l.iter().copied())
    }
}

/// Callers → rules. Exact IDs in a hash map; prefixes and globs in a per-trust-domain trie
/// over path segments, where a glob's `*` is a wildcard edge.
#[derive(Debug, Default)]
pub(super) struct IdentityIndex {
    exact: HashMap<String, Vec<RuleId>>,
    domains: HashMap<String, IdTrie>,
    /// Rules with an empty `from`: any caller, including none.
    any: Vec<RuleId>,
}

#[derive(Debug, Default)]
struct IdTrie {
    children: HashMap<String, IdTrie>,
    star: Option<Box<IdTrie>>,
    /// Prefix matchers ending here match this node and everything below.
    prefix_here: Vec<RuleId>,
    /// Globs ending here match only IDs ending here.
    glob_here: Vec<RuleId>,
}

impl IdentityIndex {
    pub(super) fn insert(&mut self, from: &[IdentityMatcher], rule: RuleId) {
        if from.is_empty() {
            push(&mut self.any, rule);
        }
        for matcher in from {
            match matcher {
                IdentityMatcher::Exact(id) => {
                    push(self.exact.entry(id.as_str().to_owned()).or_default(), rule)
                }
                IdentityMatcher::Prefix(td, segments) => {
                    let mut node = self.domains.entry(td.as_str().to_owned()).or_default();
                    for s in segments {
                        node = node.children.entry(s.clone()).or_default();
                    }
                    push(&mut node.prefix_here, rule);
                }
                IdentityMatcher::Glob(td, segments) => {
                    let mut node = self.domains.entry(td.as_str().to_owned()).or_default();
                    for s in segments {
                        node = match s {
                            Some(s) => node.children.entry(s.clone()).or_default(),
                            None => node.star.get_or_insert_with(Box::default),
                        };
                    }
                    push(&mut node.glob_here, rule);
                }
            }
        }
    }

    pub(super) fn candidates<'a>(&'a self, caller: Option<&SpiffeId>, out: &mut Candidates<'a>) {
        out.add(&self.any);
        let Some(caller) = caller else { return };
        if let Some(list) = self.exact.get(caller.as_str()) {
            out.add(list);
        }
        if let Some(trie) = self.domains.get(caller.trust_domain().as_str()) {
            let path = caller.path();
            trie.walk(path.strip_prefix('/').unwrap_or(path), out);
        }
    }
}

impl IdTrie {
    /// `rest` holds the remaining segments (`a/b`), empty when none are left.
    fn walk<'a>(&'a self, rest: &str, out: &mut Candidates<'a>) {
        out.add(&self.prefix_here);
        if rest.is_empty() {
            out.add(&self.glob_here);
            return;
        }
        let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(child) = self.children.get(head) {
            child.walk(tail, out);
        }
        if let Some(star) = &self.star {
            star.walk(tail, out);
        }
    }
}

/// Paths → rules. Exact paths in a hash map; prefixes and templates in a segment trie where
/// a `{param}` is a wildcard edge and a prefix or `{rest...}` covers the subtree.
#[derive(Debug, Default)]
pub(super) struct PathIndex {
    exact: HashMap<String, Vec<RuleId>>,
    root: PathTrie,
    /// Rules with a `to` entry without paths (or no `to` at all): any path.
    any: Vec<RuleId>,
}

#[derive(Debug, Default)]
struct PathTrie {
    literal: HashMap<String, PathTrie>,
    param: Option<Box<PathTrie>>,
    prefix_here: Vec<RuleId>,
    end_here: Vec<RuleId>,
}

impl PathIndex {
    pub(super) fn insert(&mut self, to: &[RequestMatcher], rule: RuleId) {
        if to.is_empty() || to.iter().any(|t| t.paths.is_empty()) {
            push(&mut self.any, rule);
            return;
        }
        for p in to.iter().flat_map(|t| &t.paths) {
            match p {
                PathMatcher::Exact(path) => push(
                    self.exact.entry(path.as_str().to_owned()).or_default(),
                    rule,
                ),
                PathMatcher::Prefix(path) => {
                    let node = path.segments().fold(&mut self.root, |n, s| {
                        n.literal.entry(s.to_owned()).or_default()
                    });
                    push(&mut node.prefix_here, rule);
                }
                PathMatcher::Template(template) => {
                    let mut node = &mut self.root;
                    let mut is_prefix = false;
                    for s in template.segments() {
                        node = match s {
                            TemplateSegment::Literal(l) => {
                                node.literal.entry(l.to_owned()).or_default()
                            }
                            TemplateSegment::Param(_) => {
                                node.param.get_or_insert_with(Box::default)
                            }
                            TemplateSegment::Rest(_) => {
                                is_prefix = true;
                                break;
                            }
                        };
                    }
                    push(
                        if is_prefix {
                            &mut node.prefix_here
                        } else {
                            &mut node.end_here
                        },
                        rule,
                    );
                }
            }
        }
    }

    pub(super) fn candidates<'a>(&'a self, path: &NormalizedPath, out: &mut Candidates<'a>) {
        out.add(&self.any);
        if let Some(list) = self.exact.get(path.as_str()) {
            out.add(list);
        }
        let s = path.as_str();
        self.root
            .walk(if path.is_root() { "" } else { &s[1..] }, out);
    }
}

impl PathTrie {
    fn walk<'a>(&'a self, rest: &str, out: &mut Candidates<'a>) {
        out.add(&self.prefix_here);
        if rest.is_empty() {
            out.add(&self.end_here);
            return;
        }
        let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(child) = self.literal.get(head) {
            child.walk(tail, out);
        }
        if let Some(param) = &self.param {
            param.walk(tail, out);
        }
    }
}

/// Egress destinations → rules: exact names, wildcard parents (one label), and CIDRs
/// grouped by prefix length so a lookup costs one hash probe per distinct length.
#[derive(Debug, Default)]
pub(super) struct HostIndex {
    exact: HashMap<String, Vec<RuleId>>,
    wildcard_parent: HashMap<String, Vec<RuleId>>,
    v4: BTreeMap<u8, HashMap<u32, Vec<RuleId>>>,
    v6: BTreeMap<u8, HashMap<u128, Vec<RuleId>>>,
}

impl HostIndex {
    pub(super) fn insert(&mut self, destination: &Destination, rule: RuleId) {
        use crate::dns::DnsPattern;
        let list = match destination {
            Destination::Host(DnsPattern::Exact(name)) => {
                self.exact.entry(name.as_str().to_owned()).or_default()
            }
            Destination::Host(DnsPattern::Wildcard { parent }) => self
                .wildcard_parent
                .entry(parent.as_str().to_owned())
                .or_default(),
            Destination::Cidr(cidr) => match cidr.network() {
                IpAddr::V4(net) => self
                    .v4
                    .entry(cidr.prefix_len())
                    .or_default()
                    .entry(net.to_bits())
                    .or_default(),
                IpAddr::V6(net) => self
                    .v6
                    .entry(cidr.prefix_len())
                    .or_default()
                    .entry(net.to_bits())
                    .or_default(),
            },
        };
        push(list, rule);
    }

    pub(super) fn candidates<'a>(&'a self, host: &Host, out: &mut Candidates<'a>) {
        match host {
            Host::Dns(name) => {
                if let Some(list) = self.exact.get(name.as_str()) {
                    out.add(list);
                }
                let parent = name.as_str().split_once('.').map(|(_, p)| p);
                if let Some(list) = parent.and_then(|p| self.wildcard_parent.get(p)) {
                    out.add(list);
                }
            }
            Host::Ip(ip) => match ip.to_canonical() {
                IpAddr::V4(ip) => {
                    for (&len, nets) in &self.v4 {
                        if let Some(list) = nets.get(&mask_v4(ip.to_bits(), len)) {
                            out.add(list);
                        }
                    }
                }
                IpAddr::V6(ip) => {
                    for (&len, nets) in &self.v6 {
                        if let Some(list) = nets.get(&mask_v6(ip.to_bits(), len)) {
                            out.add(list);
                        }
                    }
                }
            },
        }
    }
}
