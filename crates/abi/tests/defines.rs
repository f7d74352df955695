//! Checks that the numbers `bpf/include/twill.h` `#define`s (drop reasons,
//! event kinds, observation points, conntrack states, directions, ...)
//! have the values their mirrors in `twill_abi` have, and that every map's
//! size, as the kernel created it from the compiled object, is the one
//! user space assumes.
//!
//! Why the preprocessor rather than BTF: BTF carries types, not macros. The
//! numbers could be turned into C enums, but BTF only keeps an enum that
//! some emitted type uses, and `__uint(max_entries, ...)` and the ring
//! buffer size want plain constants; every header would have to change
//! shape to serve the test. Instead this test runs `clang -E -dM` over
//! `bpf/lxc.c` with the flags in `bpf/cflags`, which `build.rs` compiles
//! with, so it sees each macro exactly as the object was built with it,
//! through every header lxc.c includes. The values are the macro texts,
//! evaluated here (integer literals, other macros, the usual integer
//! operators); anything else is an error that names the macro, never a
//! silent skip.
//!
//! Map sizes are taken from the maps the kernel created when the object
//! was loaded, not from the macros: that catches a map whose definition
//! stopped using its macro.

use std::{
    collections::{BTreeMap, BTreeSet},
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{maps::MapInfo, EbpfLoader};

fn bpf_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf")
}

/// The flags in bpf/cflags, read the way build.rs reads them.
fn cflags(root: &Path) -> Vec<String> {
    let path = root.join("cflags");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// Object-like macros (name to replacement text) from `#define` lines as
/// `clang -dM` prints them. Function-like macros are left out: they have
/// no single value.
fn parse_defines(dump: &str) -> BTreeMap<String, String> {
    let mut macros = BTreeMap::new();
    for line in dump.lines() {
        let Some(rest) = line.strip_prefix("#define ") else { continue };
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let (name, body) = rest.split_at(name_len);
        if name.is_empty() || body.starts_with('(') {
            continue;
        }
        macros.insert(name.to_string(), body.trim().to_string());
    }
    macros
}

/// Every macro in effect at the end of lxc.c, as the build compiled it.
fn lxc_macros() -> &'static BTreeMap<String, String> {
    static MACROS: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    MACROS.get_or_init(|| {
        let root = bpf_root();
        let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
        let output = Command::new(&clang)
            .current_dir(&root)
            .args(cflags(&root))
            .args(["-E", "-dM", "lxc.c"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {clang} (needed to build bpf/ too): {e}"));
        assert!(
            output.status.success(),
            "{clang} -E -dM bpf/lxc.c failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_defines(&String::from_utf8(output.stdout).expect("clang printed non-UTF-8 macros"))
    })
}

// ---------------------------------------------------------------------------
// Evaluating a macro's replacement text: C integer constant expressions of
// the kind the headers use.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(i128),
    Ident(String),
    Op(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    const OPS: [&str; 14] = ["<<", ">>", "(", ")", "+", "-", "*", "/", "%", "&", "|", "^", "~", "!"];
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let c = rest.chars().next().unwrap();
        if c.is_ascii_digit() {
            let len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
            let literal = &rest[..len];
            // Suffixes (U, L, UL, ULL) do not change the value.
            let digits = literal.trim_end_matches(['u', 'U', 'l', 'L']);
            let value = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
                i128::from_str_radix(hex, 16)
            } else if digits.len() > 1 && digits.starts_with('0') {
                i128::from_str_radix(&digits[1..], 8)
            } else {
                digits.parse()
            };
            tokens.push(Token::Num(value.map_err(|e| format!("bad integer literal `{literal}`: {e}"))?));
            rest = &rest[len..];
        } else if c.is_ascii_alphabetic() || c == '_' {
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            tokens.push(Token::Ident(rest[..len].to_string()));
            rest = &rest[len..];
        } else if let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) {
            tokens.push(Token::Op(op));
            rest = &rest[op.len()..];
        } else {
            return Err(format!("cannot evaluate `{c}` in `{text}`"));
        }
        rest = rest.trim_start();
    }
    Ok(tokens)
}

struct Evaluator<'a> {
    macros: &'a BTreeMap<String, String>,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

/// Binding power of a binary operator, C's precedence order.
fn precedence(op: &str) -> Option<u8> {
    Some(match op {
        "|" => 1,
        "^" => 2,
        "&" => 3,
        "<<" | ">>" => 4,
        "+" | "-" => 5,
        "*" | "/" | "%" => 6,
        _ => return None,
    })
}

impl Evaluator<'_> {
    fn expression(&mut self, min: u8) -> Result<i128, String> {
        let mut left = self.unary()?;
        while let Some(Token::Op(op)) = self.tokens.get(self.pos).cloned() {
            let Some(prec) = precedence(op) else { break };
            if prec < min {
                break;
            }
            self.pos += 1;
            let right = self.expression(prec + 1)?;
            left = match op {
                "|" => left | right,
                "^" => left ^ right,
                "&" => left & right,
                "<<" => left
                    .checked_shl(u32::try_from(right).map_err(|_| "bad shift")?)
                    .ok_or("shift overflow")?,
                ">>" => left >> u32::try_from(right).map_err(|_| "bad shift")?,
                "+" => left + right,
                "-" => left - right,
                "*" => left.checked_mul(right).ok_or("overflow")?,
                "/" => left.checked_div(right).ok_or("division by zero")?,
                "%" => left.checked_rem(right).ok_or("division by zero")?,
                _ => unreachable!(),
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<i128, String> {
        let token = self.tokens.get(self.pos).cloned().ok_or("expression ends early")?;
        self.pos += 1;
        match token {
            Token::Num(n) => Ok(n),
            Token::Ident(name) => evaluate_at_depth(self.macros, &name, self.depth + 1),
            Token::Op("-") => Ok(-self.unary()?),
            Token::Op("+") => self.unary(),
            Token::Op("~") => Ok(!self.unary()?),
            Token::Op("!") => Ok(i128::from(self.unary()? == 0)),
            Token::Op("(") => {
                let value = self.expression(0)?;
                match self.tokens.get(self.pos) {
                    Some(Token::Op(")")) => {
                        self.pos += 1;
                        Ok(value)
                    }
                    other => Err(format!("expected `)`, found {other:?}")),
                }
            }
            Token::Op(op) => Err(format!("unexpected `{op}`")),
        }
    }
}

fn evaluate_at_depth(macros: &BTreeMap<String, String>, name: &str, depth: usize) -> Result<i128, String> {
    // Bounded so a macro that expands to itself cannot recurse forever.
    if depth > 32 {
        return Err(format!("`{name}` expands too deeply"));
    }
    let text = macros.get(name).ok_or_else(|| format!("`{name}` is not defined"))?;
    let mut evaluator = Evaluator { macros, tokens: tokenize(text)?, pos: 0, depth };
    let value = evaluator.expression(0).map_err(|e| format!("`{name}` = `{text}`: {e}"))?;
    if evaluator.pos != evaluator.tokens.len() {
        return Err(format!("`{name}` = `{text}`: trailing tokens"));
    }
    Ok(value)
}

/// The value of the object-like macro `name`.
fn evaluate(macros: &BTreeMap<String, String>, name: &str) -> Result<i128, String> {
    evaluate_at_depth(macros, name, 0)
}

// ---------------------------------------------------------------------------
// The mirrors.
// ---------------------------------------------------------------------------

/// `mirrors![A, B]` is `[("A", twill_abi::A), ...]`: each C macro next to
/// the Rust constant of the same name, whatever its integer type.
macro_rules! mirrors {
    ($($name:ident),+ $(,)?) => {
        vec![$((stringify!($name), twill_abi::$name as i128)),+]
    };
}

/// Every number of bpf/include/twill.h with its Rust mirror.
fn mirrored() -> Vec<(&'static str, i128)> {
    let mut all = mirrors![
        // Reserved identities.
        IDENTITY_UNKNOWN,
        IDENTITY_HOST,
        IDENTITY_WORLD,
        IDENTITY_REMOTE_NODE,
        // Endpoint flags.
        ENDPOINT_F_INGRESS_ENFORCED,
        ENDPOINT_F_EGRESS_ENFORCED,
        ENDPOINT_F_SHAPED,
        ENDPOINT_F_DEBUG,
        // ipcache flags.
        IPCACHE_F_NODE,
        // Drop reasons.
        DROP_INVALID_SOURCE_IP,
        DROP_POLICY,
        DROP_INVALID_PACKET,
        DROP_CT_INVALID_HDR,
        DROP_UNSUPPORTED_L3,
        DROP_POLICY_DENY,
        DROP_PROXY_LOOKUP_FAILED,
        DROP_PROXY_SET_FAILED,
        DROP_WRITE_ERROR,
        DROP_NO_TUNNEL_KEY,
        DROP_UNKNOWN_SENDER,
        // Metrics.
        METRIC_FORWARDED,
        METRIC_DIR_INGRESS,
        METRIC_DIR_EGRESS,
        METRICS_DIR_SHIFT,
        METRICS_ENTRIES,
        // Map and ring sizes.
        MAX_ENDPOINTS,
        MAX_IPCACHE_ENTRIES,
        MAX_POLICY_ENTRIES,
        MAX_CT_ENTRIES,
        EVENTS_RING_BYTES,
        EVENTS_WAKEUP_BYTES,
        // Policy keys and values.
        DIR_INGRESS,
        DIR_EGRESS,
        POLICY_FIXED_PREFIX,
        POLICY_FULL_PREFIX,
        POLICY_FLAG_DENY,
        POLICY_MATCH_NONE,
        POLICY_MATCH_L3_ONLY,
        POLICY_MATCH_L3_L4,
        POLICY_MATCH_L4_ONLY,
        POLICY_MATCH_ALL,
        POLICY_MATCH_L3_PROTO,
        POLICY_MATCH_PROTO_ONLY,
        // Connection tracking.
        CT_FLAG_CLOSING,
        CT_SIDE_A,
        CT_SIDE_B,
        CT_PAIR,
        CT_ORIGIN_A,
        CT_ORIGIN_B,
        // Marks and the proxy's route table.
        MARK_MAGIC_MASK,
        MARK_MAGIC_TO_PROXY,
        MARK_MAGIC_PROXY_IDENTITY,
        PROXY_ROUTE_TABLE,
        CT_NEW,
        CT_ESTABLISHED,
        CT_REPLY,
        CT_RELATED,
        // Trace aggregation and events.
        AGGREGATION_NONE,
        AGGREGATION_LOW,
        AGGREGATION_MEDIUM,
        AGGREGATION_MAXIMUM,
        AGGREGATION_INTERVAL_SECONDS,
        TRACE_TO_PROXY,
        TRACE_TO_STACK,
        TRACE_FROM_ENDPOINT,
        TRACE_TO_ENDPOINT,
        TRACE_TO_OVERLAY,
        TRACE_FROM_OVERLAY,
        TRACE_TO_NETWORK,
        EVENTS_DROP,
        EVENTS_TRACE,
        EVENTS_POLICY,
        EVENT_DROP,
        EVENT_TRACE,
        EVENT_POLICY_VERDICT,
        EVENTS_DEBUG,
        EVENT_DEBUG,
        // Debug messages.
        DBG_LOCAL_DELIVERY,
        DBG_ENCAP,
        DBG_LXC_FOUND,
        DBG_POLICY_DENIED,
        DBG_CT_MATCH,
        DBG_CT_VERDICT,
        DBG_DECAP,
        DBG_TO_STACK,
        DBG_LB4_LOOKUP_FRONTEND,
        DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS,
        DBG_CT_LOOKUP4_1,
        DBG_CT_LOOKUP4_2,
        DBG_CT_CREATED4,
        TUPLE_F_IN,
        TUPLE_F_OUT,
        TUPLE_F_RELATED,
        // Services.
        DROP_NO_SERVICE,
        MAX_LB_SERVICE_ENTRIES,
        MAX_LB_BACKENDS,
        MAX_LB_FRONTENDS,
        MAX_LB_AFFINITY,
        MAX_LB_SOCK_ENTRIES,
        MAX_LB_MAGLEV,
        MAX_LB_NETNS,
        LB_MAGLEV_DEFAULT_SIZE,
        FIB_DEVICES_MAX,
        LB_F_NODEPORT,
        LB_F_MAGLEV,
        LB_NAT_FORWARD,
        LB_NAT_REVERSE,
    ];
    // Which metrics slot counts a direction is the shift in
    // METRICS_INDEX(); the Rust side computes it in a function.
    all.push(("METRICS_DIR_SHIFT", i128::from(twill_abi::metrics_index(1, 0)).trailing_zeros() as i128));
    all
}

/// Compares each mirror with the macro of its name and describes every
/// difference (empty when all agree), so one run shows all the drift.
fn compare_values(macros: &BTreeMap<String, String>, mirrors: &[(&str, i128)]) -> Vec<String> {
    mirrors
        .iter()
        .filter_map(|&(name, rust)| match evaluate(macros, name) {
            Ok(c) if c == rust => None,
            Ok(c) => Some(format!("{name} is {c} in C but {rust} in twill_abi")),
            Err(e) => Some(format!("{name}: {e}")),
        })
        .collect()
}

/// Names `#define`d (object-like) in a header's source text.
fn defined_names(source: &str) -> BTreeSet<String> {
    let defines: String = source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#')?.trim_start().strip_prefix("define"))
        .map(|rest| format!("#define {}\n", rest.trim_start()))
        .collect();
    parse_defines(&defines).into_keys().collect()
}

#[test]
fn every_number_in_twill_h_matches_its_rust_mirror() {
    let errors = compare_values(lxc_macros(), &mirrored());
    assert!(
        errors.is_empty(),
        "numbers in bpf/include/twill.h and crates/abi/src/lib.rs disagree; change both together:\n  {}",
        errors.join("\n  ")
    );
}

/// A number added to the shared header without a mirror would go
/// unchecked: it fails here until it is added to `mirrored()`.
#[test]
fn every_number_in_twill_h_has_a_mirror() {
    let header = bpf_root().join("include/twill.h");
    let source =
        fs::read_to_string(&header).unwrap_or_else(|e| panic!("cannot read {}: {e}", header.display()));
    let checked: BTreeSet<&str> = mirrored().iter().map(|&(name, _)| name).collect();
    let unchecked: Vec<String> =
        defined_names(&source).into_iter().filter(|n| !checked.contains(n.as_str())).collect();
    assert!(
        unchecked.is_empty(),
        "#defines in bpf/include/twill.h with no mirror checked by this test: {unchecked:?}; \
         add a constant to crates/abi/src/lib.rs and its name to mirrored()"
    );
}

/// Flow logs print a reason's text: every code the datapath can drop with
/// must have one, or users read "Unknown reason".
#[test]
fn every_drop_reason_has_a_text() {
    let macros = lxc_macros();
    let missing: Vec<String> = macros
        .keys()
        .filter(|name| name.starts_with("DROP_"))
        .map(|name| (name, evaluate(macros, name).unwrap_or_else(|e| panic!("{e}"))))
        .filter(|&(_, code)| twill_abi::drop_reason_text(code as u32) == "Unknown reason")
        .map(|(name, code)| format!("{name} ({code})"))
        .collect();
    assert!(missing.is_empty(), "drop reasons without a text in twill_abi: {missing:?}");
}

/// Every (direction, reason) pair must have a metrics slot: a drop reason
/// is a u8, so both directions' 256 reasons must fit in the map.
#[test]
fn metrics_map_has_a_slot_for_every_direction_and_reason() {
    let macros = lxc_macros();
    let entries = evaluate(macros, "METRICS_ENTRIES").unwrap();
    for dir in ["METRIC_DIR_INGRESS", "METRIC_DIR_EGRESS"] {
        let dir = evaluate(macros, dir).unwrap() as u32;
        let last = twill_abi::metrics_index(dir, u8::MAX as u32);
        assert!(i128::from(last) < entries, "metrics index {last} is outside the {entries}-entry map");
    }
}

/// A unique bpffs directory for the maps of one load, removed on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> PinDir {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let path = PathBuf::from(format!("/sys/fs/bpf/twill-abi-test-{}-{nanos}", std::process::id()));
        twill_datapath::ensure_bpffs(&path).unwrap_or_else(|e| panic!("bpffs at {}: {e}", path.display()));
        PinDir(path)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Loads every object (maps only; no program is loaded or attached) into
/// one pin directory, as the agent does, and compares each map's size as
/// the kernel reports it with the size user space uses.
#[test]
fn loaded_map_sizes_match_rust_side() {
    let pins = PinDir::new();
    let objects = [
        ("lxc.o", twill_datapath::LXC_OBJECT),
        ("sock.o", twill_datapath::SOCK_OBJECT),
        ("netdev.o", twill_datapath::NETDEV_OBJECT),
        ("overlay.o", twill_datapath::OVERLAY_OBJECT),
    ];

    // (map, size user space assumes). Single-slot maps have no constant:
    // user space always reads index 0.
    let expected: BTreeMap<&str, u64> = [
        ("twill_endpoints", twill_abi::MAX_ENDPOINTS as u64),
        ("twill_ipcache", twill_abi::MAX_IPCACHE_ENTRIES as u64),
        ("twill_policy", twill_abi::MAX_POLICY_ENTRIES as u64),
        ("twill_ct", twill_abi::MAX_CT_ENTRIES as u64),
        ("twill_metrics", twill_abi::METRICS_ENTRIES as u64),
        ("twill_events", twill_abi::EVENTS_RING_BYTES as u64),
        ("twill_config", 1),
        ("twill_event_stats", 1),
        ("twill_lb4_services", twill_abi::MAX_LB_SERVICE_ENTRIES as u64),
        ("twill_lb4_backends", twill_abi::MAX_LB_BACKENDS as u64),
        ("twill_lb4_reverse_nat", twill_abi::MAX_LB_FRONTENDS as u64),
        ("twill_lb4_maglev", twill_abi::MAX_LB_MAGLEV as u64),
        ("twill_lb_affinity", twill_abi::MAX_LB_AFFINITY as u64),
        ("twill_lb_affinity_match", twill_abi::MAX_LB_SERVICE_ENTRIES as u64),
        ("twill_lb4_sk", twill_abi::MAX_LB_SOCK_ENTRIES as u64),
        ("twill_lb_netns", twill_abi::MAX_LB_NETNS as u64),
        // Two entries per connection, in a table as big as conntrack's.
        ("twill_lb4_nat", twill_abi::MAX_CT_ENTRIES as u64),
    ]
    .into_iter()
    .collect();

    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (object, bytes) in objects {
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.0)
            .load(bytes)
            .unwrap_or_else(|e| panic!("loading the maps of {object}: {e}"));
        for (name, _) in ebpf.maps() {
            // Not pinned and never read: they only carry struct flow_event
            // and struct debug_event into the BTF, which btf_layout.rs
            // checks.
            if name == "twill_event_layout" || name == "twill_debug_layout" {
                continue;
            }
            seen.insert(name.to_string());
            let Some(&want) = expected.get(name) else {
                errors.push(format!(
                    "map {name} of {object} has no expected size here; add it with its twill_abi constant"
                ));
                continue;
            };
            let pin = pins.0.join(name);
            match MapInfo::from_pin(&pin) {
                Ok(info) if u64::from(info.max_entries()) == want => {}
                Ok(info) => errors.push(format!(
                    "map {name}: the kernel created it with max_entries {} but twill_abi says {want}",
                    info.max_entries()
                )),
                Err(e) => errors.push(format!(
                    "map {name}: no pin at {} ({e}); is it still pinned by name?",
                    pin.display()
                )),
            }
        }
    }
    for name in expected.keys().filter(|n| !seen.contains(**n)) {
        errors.push(format!("map {name} is no longer in any object"));
    }
    assert!(errors.is_empty(), "map sizes disagree:\n  {}", errors.join("\n  "));
}

// ---------------------------------------------------------------------------
// Tests of the checker itself, so a passing run above means something.
// ---------------------------------------------------------------------------

/// The drift this test exists to catch: a number changed on one side. The
/// real macro table with one value altered must be reported, by name.
#[test]
fn a_number_changed_on_one_side_is_reported() {
    let mut macros = lxc_macros().clone();
    assert!(compare_values(&macros, &mirrored()).is_empty(), "the real headers must agree first");
    macros.insert("DROP_POLICY".into(), "134".into());
    macros.insert("EVENTS_RING_BYTES".into(), "(1 << 21)".into());
    let errors = compare_values(&macros, &mirrored());
    assert_eq!(
        errors,
        [
            "DROP_POLICY is 134 in C but 133 in twill_abi",
            "EVENTS_RING_BYTES is 2097152 in C but 4194304 in twill_abi"
        ]
    );
}

#[test]
fn a_removed_macro_is_reported() {
    let mut macros = lxc_macros().clone();
    macros.remove("CT_RELATED");
    assert_eq!(compare_values(&macros, &mirrored()), ["CT_RELATED: `CT_RELATED` is not defined"]);
}

#[test]
fn evaluator_handles_what_headers_write() {
    let dump = "#define A 0x10\n#define B (A << 2)\n#define C (1U << 22)\n#define D (B | 3) * 2\n\
                #define E -(~0)\n#define F 010\n#define FN(x, y) ((x) << 8)\n#define G 1ULL + 2 * 3\n\
                #define H __u16\n#define I (\n#define J J\n";
    let macros = parse_defines(dump);
    assert!(!macros.contains_key("FN"), "function-like macros have no value");
    let value = |name| evaluate(&macros, name);
    assert_eq!(value("A"), Ok(16));
    assert_eq!(value("B"), Ok(64));
    assert_eq!(value("C"), Ok(4194304));
    assert_eq!(value("D"), Ok(134));
    assert_eq!(value("E"), Ok(1));
    assert_eq!(value("F"), Ok(8));
    assert_eq!(value("G"), Ok(7));
    assert!(value("H").unwrap_err().contains("`__u16` is not defined"));
    assert!(value("I").is_err());
    assert!(value("J").unwrap_err().contains("too deeply"));
}

#[test]
fn defined_names_reads_header_source() {
    let source =
        "#pragma once\n#define X 1 /* why */\n  # define Y (X + 1)\n#define Z(a) (a)\n#include <x.h>\n";
    assert_eq!(defined_names(source), BTreeSet::from(["X".to_string(), "Y".to_string()]));
}
