//! Checks that the `#[repr(C)]` mirrors in `twill_abi` have the same layout
//! as the C structs in `bpf/include/twill.h`, as clang compiled them.
//!
//! The C side is read from the BTF of the compiled endpoint object
//! (`twill_datapath::LXC_OBJECT`) rather than from the header, so what is
//! compared is exactly what the kernel will see. A field added, removed,
//! renamed, reordered or resized on either side fails this test instead of
//! silently corrupting map entries at run time.
//!
//! The BTF parser is written here rather than borrowed from aya-obj because
//! aya-obj keeps its BTF type tables private; we only need struct layouts,
//! which is a few dozen lines.

use std::mem::{offset_of, size_of};

use object::{Object, ObjectSection};
use twill_abi::{
    CtEntry, CtKey, DatapathConfig, DebugEvent, EndpointInfo, EndpointKey, FlowEvent, IpcacheKey,
    IpcacheValue, Lb4Backend, Lb4Key, Lb4NatEntry, Lb4ReverseNat, Lb4Service, Lb4SkKey, Lb4SkValue,
    LbAffinityKey, LbAffinityMatchKey, LbAffinityValue, LbNetnsValue, MetricsValue, PolicyKey, PolicyValue,
};

// ---------------------------------------------------------------------------
// A minimal BTF reader (format: linux/Documentation/bpf/btf.rst).
// ---------------------------------------------------------------------------

const BTF_MAGIC: u16 = 0xEB9F;
const BTF_HEADER_LEN: usize = 24;
/// Every type record starts with name_off, info, size/type: three u32s.
const BTF_TYPE_LEN: usize = 12;

// BTF kinds (BTF_KIND_* in linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// What we need to know about one BTF type to compute a member's size.
#[derive(Debug, Clone, Copy)]
enum Type {
    /// Type id 0.
    Void,
    /// INT, FLOAT, ENUM, ENUM64, STRUCT, UNION: the size is in the record.
    Sized(u32),
    /// TYPEDEF and the qualifiers: as big as the type they refer to.
    Alias(u32),
    /// Pointers are 8 bytes on BPF, whatever the host.
    Ptr,
    Array {
        elem: u32,
        nelems: u32,
    },
    /// FUNC, FUNC_PROTO, VAR, DATASEC, FWD, DECL_TAG: never a member's type.
    Unsized,
}

/// A STRUCT record as stored, before names and sizes are resolved.
#[derive(Debug)]
struct RawStruct {
    name: String,
    size: u32,
    /// With kind_flag set, each member's offset field packs the bitfield
    /// size in its top 8 bits and the bit offset in the low 24.
    kind_flag: bool,
    /// (name_off, type id, offset field) of each member, in order.
    members: Vec<(u32, u32, u32)>,
}

#[derive(Debug, PartialEq, Eq)]
struct Member {
    name: String,
    bit_offset: u32,
    /// 0 for an ordinary (non-bitfield) member.
    bitfield_size: u32,
    /// Size in bytes of the member's type.
    size: u32,
}

#[derive(Debug, PartialEq, Eq)]
struct StructLayout {
    size: u32,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Btf {
    strings: Vec<u8>,
    /// Indexed by type id; id 0 is void and has no record.
    types: Vec<Type>,
    structs: Vec<RawStruct>,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, String> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes(b.try_into().unwrap()))
        .ok_or_else(|| format!("BTF truncated: no u16 at byte {at}"))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .ok_or_else(|| format!("BTF truncated: no u32 at byte {at}"))
}

/// The `len` bytes at `hdr_len + off`, or an error naming the section.
fn section<'a>(data: &'a [u8], hdr_len: u32, off: u32, len: u32, what: &str) -> Result<&'a [u8], String> {
    let start = (hdr_len as usize).checked_add(off as usize);
    let end = start.and_then(|s| s.checked_add(len as usize));
    match (start, end) {
        (Some(s), Some(e)) if e <= data.len() => Ok(&data[s..e]),
        _ => Err(format!(
            "BTF {what} section ({off}+{len} after a {hdr_len}-byte header) runs past the {}-byte blob",
            data.len()
        )),
    }
}

impl Btf {
    /// Parses a little-endian `.BTF` section (the BPF target we build for is
    /// little-endian; a big-endian blob is rejected by the magic check).
    fn parse(data: &[u8]) -> Result<Btf, String> {
        let magic = u16_at(data, 0)?;
        if magic != BTF_MAGIC {
            return Err(format!("bad BTF magic {magic:#06x}, expected {BTF_MAGIC:#06x} (little-endian)"));
        }
        let version = data[2];
        if version != 1 {
            return Err(format!("unsupported BTF version {version}"));
        }
        // data[3] is flags, unused so far.
        let hdr_len = u32_at(data, 4)?;
        if (hdr_len as usize) < BTF_HEADER_LEN {
            return Err(format!("BTF header length {hdr_len} is shorter than {BTF_HEADER_LEN}"));
        }
        let (type_off, type_len) = (u32_at(data, 8)?, u32_at(data, 12)?);
        let (str_off, str_len) = (u32_at(data, 16)?, u32_at(data, 20)?);
        let type_data = section(data, hdr_len, type_off, type_len, "type")?;
        let strings = section(data, hdr_len, str_off, str_len, "string")?.to_vec();

        let mut types = vec![Type::Void];
        let mut structs = Vec::new();
        let mut pos = 0;
        while pos < type_data.len() {
            let id = types.len();
            let name_off = u32_at(type_data, pos)?;
            let info = u32_at(type_data, pos + 4)?;
            let size_or_type = u32_at(type_data, pos + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let extra = pos + BTF_TYPE_LEN;

            // The trailing data after the common record differs per kind;
            // getting one wrong desynchronises every type after it, so an
            // unknown kind is an error rather than a guess.
            let trailing = match kind {
                KIND_INT => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => 12 * vlen,
                KIND_ENUM => 8 * vlen,
                KIND_FUNC_PROTO => 8 * vlen,
                KIND_VAR => 4,
                KIND_DATASEC => 12 * vlen,
                KIND_DECL_TAG => 4,
                KIND_ENUM64 => 12 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                _ => return Err(format!("BTF type {id} has unknown kind {kind}")),
            };
            if extra + trailing > type_data.len() {
                return Err(format!("BTF type {id} (kind {kind}) runs past the type section"));
            }

            let ty = match kind {
                KIND_INT | KIND_FLOAT | KIND_ENUM | KIND_ENUM64 | KIND_UNION => Type::Sized(size_or_type),
                KIND_STRUCT => {
                    let members = (0..vlen)
                        .map(|i| {
                            let m = extra + 12 * i;
                            Ok((u32_at(type_data, m)?, u32_at(type_data, m + 4)?, u32_at(type_data, m + 8)?))
                        })
                        .collect::<Result<_, String>>()?;
                    let name = str_at(&strings, name_off)?.to_owned();
                    structs.push(RawStruct { name, size: size_or_type, kind_flag, members });
                    Type::Sized(size_or_type)
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                KIND_PTR => Type::Ptr,
                // struct btf_array { type, index_type, nelems }
                KIND_ARRAY => {
                    Type::Array { elem: u32_at(type_data, extra)?, nelems: u32_at(type_data, extra + 8)? }
                }
                _ => Type::Unsized,
            };
            types.push(ty);
            pos = extra + trailing;
        }
        Ok(Btf { strings, types, structs })
    }

    /// Size in bytes of type `id`, following typedefs, qualifiers and arrays.
    fn type_size(&self, id: u32) -> Result<u32, String> {
        let mut id = id;
        // Bounded so a malformed typedef cycle cannot hang the test.
        for _ in 0..64 {
            match self.types.get(id as usize) {
                Some(Type::Sized(size)) => return Ok(*size),
                Some(Type::Ptr) => return Ok(8),
                Some(Type::Alias(target)) => id = *target,
                Some(Type::Array { elem, nelems }) => {
                    return self
                        .type_size(*elem)?
                        .checked_mul(*nelems)
                        .ok_or_else(|| format!("BTF array type {id} overflows"))
                }
                Some(Type::Void) | Some(Type::Unsized) => return Err(format!("BTF type {id} has no size")),
                None => return Err(format!("BTF type id {id} out of range")),
            }
        }
        Err(format!("BTF type chain from {id} is too long (cycle?)"))
    }

    /// The layout of the struct called `name`. Unions, forward declarations
    /// and anonymous structs are not considered.
    fn struct_layout(&self, name: &str) -> Result<StructLayout, String> {
        let mut found = self.structs.iter().filter(|s| s.name == name);
        let raw = found.next().ok_or_else(|| format!("struct `{name}` is not in the BTF"))?;
        if found.next().is_some() {
            return Err(format!("struct `{name}` appears more than once in the BTF"));
        }
        let members = raw
            .members
            .iter()
            .map(|&(name_off, type_id, offset)| {
                let (bitfield_size, bit_offset) =
                    if raw.kind_flag { (offset >> 24, offset & 0xff_ffff) } else { (0, offset) };
                Ok(Member {
                    name: str_at(&self.strings, name_off)?.to_owned(),
                    bit_offset,
                    bitfield_size,
                    size: self.type_size(type_id)?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(StructLayout { size: raw.size, members })
    }
}

/// The NUL-terminated string at `off` in the string section.
fn str_at(strings: &[u8], off: u32) -> Result<&str, String> {
    let tail = strings.get(off as usize..).ok_or_else(|| format!("BTF string offset {off} out of range"))?;
    let len =
        tail.iter().position(|&b| b == 0).ok_or_else(|| format!("BTF string at {off} is not terminated"))?;
    std::str::from_utf8(&tail[..len]).map_err(|e| format!("BTF string at {off}: {e}"))
}

/// The BTF of the compiled endpoint programs.
fn lxc_btf() -> Btf {
    object_btf(twill_datapath::LXC_OBJECT, "lxc.o")
}

/// The BTF of one compiled object.
fn object_btf(bytes: &[u8], name: &str) -> Btf {
    let file = object::File::parse(bytes).unwrap_or_else(|e| panic!("{name} is not a valid ELF object: {e}"));
    assert!(file.is_little_endian(), "{name} is big-endian; this test only reads little-endian BTF");
    let section = file
        .section_by_name(".BTF")
        .unwrap_or_else(|| panic!("{name} has no .BTF section; is bpf/ still compiled with -g?"));
    let data = section.data().unwrap_or_else(|e| panic!("cannot read the .BTF section of {name}: {e}"));
    Btf::parse(data).unwrap_or_else(|e| panic!("cannot parse the .BTF of {name}: {e}"))
}

// ---------------------------------------------------------------------------
// Comparing a C struct with its Rust mirror.
// ---------------------------------------------------------------------------

/// One field of a Rust mirror: name, byte offset, byte size.
type RustField = (&'static str, usize, usize);

/// Size of the field that `_get` borrows, without needing a value.
fn field_size<T, F>(_get: fn(*const T) -> *const F) -> usize {
    size_of::<F>()
}

/// Compares the C struct `c_name` in `btf` with a Rust mirror and returns a
/// description of every difference (empty when they agree), each naming
/// the struct and field, so one run reports all the drift at once.
fn compare_layout(
    btf: &Btf,
    c_name: &str,
    rust_name: &str,
    rust_size: usize,
    mut rust: Vec<RustField>,
) -> Vec<String> {
    let what = format!("{rust_name} (C struct {c_name})");
    let c = match btf.struct_layout(c_name) {
        Ok(layout) => layout,
        // A missing struct is a failure, not a skip: it means the mirror is
        // no longer checked against anything.
        Err(e) => return vec![format!("{what}: {e}; is it still used by a map or program in bpf/lxc.c?")],
    };
    let mut errors = Vec::new();

    if c.size as usize != rust_size {
        errors.push(format!("{what}: size is {} bytes in C but {rust_size} in Rust", c.size));
    }

    // `repr(C)` lays fields out in declaration order at strictly increasing
    // offsets, so sorting by offset recovers the Rust declaration order
    // regardless of the order the fields were listed in the macro call.
    rust.sort_by_key(|&(_, offset, _)| offset);
    let c_names: Vec<&str> = c.members.iter().map(|m| m.name.as_str()).collect();
    let rust_names: Vec<&str> = rust.iter().map(|&(name, _, _)| name).collect();
    if c_names != rust_names {
        errors.push(format!("{what}: fields differ: C has {c_names:?}, Rust has {rust_names:?}"));
    }

    // Compare offsets and sizes by name, so a rename elsewhere in the struct
    // does not hide a moved field.
    for m in &c.members {
        let field = format!("{rust_name}.{}", m.name);
        if m.bitfield_size != 0 {
            errors.push(format!(
                "{field}: is a {}-bit bitfield in C, which a Rust mirror cannot express",
                m.bitfield_size
            ));
            continue;
        }
        if m.bit_offset % 8 != 0 {
            errors.push(format!("{field}: C bit offset {} is not byte-aligned", m.bit_offset));
            continue;
        }
        let Some(&(_, offset, size)) = rust.iter().find(|&&(name, _, _)| name == m.name) else {
            continue; // already reported by the name comparison
        };
        let c_offset = (m.bit_offset / 8) as usize;
        if c_offset != offset {
            errors.push(format!("{field}: offset is {c_offset} in C but {offset} in Rust"));
        }
        if m.size as usize != size {
            errors.push(format!("{field}: size is {} bytes in C but {size} in Rust", m.size));
        }
    }
    errors
}

/// `compare_layout!(btf, "c_name", RustType { field, ... })` compares one
/// mirror; the field list must name every Rust field (checked at compile
/// time) and may be in any order.
macro_rules! compare_layout {
    ($btf:expr, $c_name:literal, $ty:ident { $($field:ident),+ $(,)? }) => {{
        // Destructuring without `..` stops compiling if a field is added to
        // the Rust struct but not to this list, so none goes unchecked.
        #[allow(dead_code)]
        fn all_fields_listed(v: $ty) {
            let $ty { $($field: _),+ } = v;
        }
        let fields: Vec<RustField> = vec![$(
            (stringify!($field), offset_of!($ty, $field), field_size::<$ty, _>(|v| {
                // Only names the field's type (packed structs forbid references);
                // never called.
                unsafe { std::ptr::addr_of!((*v).$field) }
            })),
        )+];
        compare_layout($btf, $c_name, stringify!($ty), size_of::<$ty>(), fields)
    }};
}

/// Every object that reads the configuration has its own copy of it.
fn datapath_config_layout(btf: &Btf) -> Vec<String> {
    compare_layout!(
        btf,
        "datapath_config",
        DatapathConfig {
            allow_localhost,
            aggregation,
            events,
            maglev_table_size,
            tunnel_ifindex,
            report_flags,
            legacy_host_routing,
            fib_devices
        }
    )
}

#[test]
fn rust_mirrors_match_btf_of_lxc_object() {
    let btf = lxc_btf();
    let errors: Vec<String> = [
        compare_layout!(&btf, "endpoint_key", EndpointKey { ip }),
        compare_layout!(
            &btf,
            "endpoint_info",
            EndpointInfo { ifindex, endpoint_id, identity, flags, mac, host_mac }
        ),
        compare_layout!(&btf, "ipcache_key", IpcacheKey { prefixlen, ip }),
        compare_layout!(&btf, "ipcache_value", IpcacheValue { identity, flags, tunnel_endpoint }),
        compare_layout!(&btf, "metrics_value", MetricsValue { packets, bytes }),
        compare_layout!(
            &btf,
            "policy_key",
            PolicyKey { prefixlen, endpoint_id, direction, pad, identity, protocol, dport }
        ),
        compare_layout!(&btf, "policy_value", PolicyValue { flags, match_type, proxy_port, pad }),
        compare_layout!(&btf, "ct_key", CtKey { saddr, daddr, sport, dport, protocol, scope, pad }),
        compare_layout!(
            &btf,
            "ct_entry",
            CtEntry {
                expires,
                packets,
                bytes,
                tcp_flags,
                flags,
                reported_flags,
                last_report,
                proxy_port,
                origin,
                pad
            }
        ),
        datapath_config_layout(&btf),
        compare_layout!(
            &btf,
            "flow_event",
            FlowEvent {
                timestamp,
                kind,
                reason,
                direction,
                ct_state,
                endpoint_id,
                src_identity,
                dst_identity,
                saddr,
                daddr,
                sport,
                dport,
                protocol,
                tcp_flags,
                icmp_type,
                icmp_code,
                ifindex,
                length,
                policy_match,
                src_mac,
                dst_mac
            }
        ),
        compare_layout!(
            &btf,
            "debug_event",
            DebugEvent { timestamp, kind, subtype, source, hash, arg1, arg2, arg3, cpu }
        ),
    ]
    .concat();
    assert!(
        errors.is_empty(),
        "Rust mirrors in crates/abi/src/lib.rs disagree with bpf/include/twill.h:\n  {}",
        errors.join("\n  ")
    );
}

/// The overlay program reads the same shared structs through its own
/// object: checked there too, so a header it alone includes cannot shift
/// them.
#[test]
fn rust_mirrors_match_btf_of_overlay_object() {
    let btf = object_btf(twill_datapath::OVERLAY_OBJECT, "overlay.o");
    let errors: Vec<String> = [
        compare_layout!(&btf, "ipcache_value", IpcacheValue { identity, flags, tunnel_endpoint }),
        compare_layout!(
            &btf,
            "endpoint_info",
            EndpointInfo { ifindex, endpoint_id, identity, flags, mac, host_mac }
        ),
        datapath_config_layout(&btf),
    ]
    .concat();
    assert!(errors.is_empty(), "Rust mirrors disagree with overlay.o:\n  {}", errors.join("\n  "));
}

/// The service structs, against the objects whose maps use them: the
/// socket hooks (bpf/sock.c) define the service, affinity, socket and
/// namespace maps; the NodePort programs (bpf/netdev.c) the NAT table.
#[test]
fn rust_mirrors_match_btf_of_service_objects() {
    let sock = object_btf(twill_datapath::SOCK_OBJECT, "sock.o");
    let netdev = object_btf(twill_datapath::NETDEV_OBJECT, "netdev.o");
    let errors: Vec<String> = [
        compare_layout!(&sock, "lb4_key", Lb4Key { address, dport, backend_slot, proto, pad }),
        compare_layout!(
            &sock,
            "lb4_service",
            Lb4Service { backend_id, affinity_timeout, rev_nat_index, count, flags, pad }
        ),
        compare_layout!(&sock, "lb4_backend", Lb4Backend { address, port, proto, flags }),
        compare_layout!(&sock, "lb4_reverse_nat", Lb4ReverseNat { address, port, pad }),
        compare_layout!(&sock, "lb_affinity_key", LbAffinityKey { client, rev_nat_index, netns, pad }),
        compare_layout!(&sock, "lb_affinity_value", LbAffinityValue { last_used, backend_id, pad }),
        compare_layout!(&sock, "lb_affinity_match_key", LbAffinityMatchKey { backend_id, rev_nat_index }),
        compare_layout!(&sock, "lb4_sk_key", Lb4SkKey { cookie, address, port, pad }),
        compare_layout!(&sock, "lb4_sk_value", Lb4SkValue { address, port, pad, rev_nat_index }),
        compare_layout!(&sock, "lb_netns_value", LbNetnsValue { endpoint_id, identity }),
        compare_layout!(
            &netdev,
            "lb4_nat_entry",
            Lb4NatEntry { expires, address, port, flags, rev_nat_index, ifindex }
        ),
        compare_layout!(&netdev, "ct_key", CtKey { saddr, daddr, sport, dport, protocol, scope, pad }),
    ]
    .concat();
    assert!(
        errors.is_empty(),
        "Rust mirrors in crates/abi/src/lib.rs disagree with bpf/include/twill.h:\n  {}",
        errors.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Tests of the checker itself, so a passing run above means something.
// ---------------------------------------------------------------------------

/// A mirror of `ipcache_key` with its fields swapped must be caught against
/// the real object: this is the drift the test exists to detect.
#[test]
fn swapped_fields_are_reported_against_lxc_object() {
    #[repr(C)]
    #[allow(dead_code)]
    struct IpcacheKeySwapped {
        ip: u32,
        prefixlen: u32,
    }
    let errors = compare_layout!(&lxc_btf(), "ipcache_key", IpcacheKeySwapped { prefixlen, ip });
    assert!(errors.iter().any(|e| e.contains("fields differ")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("IpcacheKeySwapped.ip: offset is 4 in C but 0 in Rust")),
        "{errors:?}"
    );
}

#[test]
fn missing_struct_is_a_failure() {
    #[repr(C)]
    #[allow(dead_code)]
    struct Nothing {
        x: u32,
    }
    let errors = compare_layout!(&lxc_btf(), "no_such_struct", Nothing { x });
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("struct `no_such_struct` is not in the BTF"), "{errors:?}");
}

/// Builds a BTF blob by hand, the way clang lays it out.
struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
}

impl BtfBuilder {
    fn new() -> Self {
        // String offset 0 is the empty name, used by anonymous types.
        BtfBuilder { types: Vec::new(), strings: vec![0] }
    }

    fn string(&mut self, s: &str) -> u32 {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// The common 12-byte record header.
    fn record(&mut self, name: &str, kind: u32, kind_flag: bool, vlen: u32, size_or_type: u32) {
        let name_off = if name.is_empty() { 0 } else { self.string(name) };
        let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
        self.words(&[name_off, info, size_or_type]);
    }

    fn finish(self) -> Vec<u8> {
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]); // version, flags
        let type_len = self.types.len() as u32;
        // hdr_len, type_off, type_len, str_off, str_len
        for w in [BTF_HEADER_LEN as u32, 0, type_len, type_len, self.strings.len() as u32] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&self.types);
        blob.extend_from_slice(&self.strings);
        blob
    }
}

/// A blob with kinds that carry trailing data before the struct, so a wrong
/// skip size would misread the struct:
///   [1] INT 'int' size=4
///   [2] FUNC_PROTO returning [1], one parameter of type [1]
///   [3] ENUM 'e' size=4, two values
///   [4] ARRAY of 3 x [1]
///   [5] TYPEDEF 'int_t' -> [1]
///   [6] STRUCT 's' size=20, kind_flag: a:[5]@0, b:[4]@32, f:[1] 3 bits @128
fn sample_btf() -> Vec<u8> {
    let mut b = BtfBuilder::new();
    b.record("int", KIND_INT, false, 0, 4);
    b.words(&[32]); // encoding 0, offset 0, 32 bits
    b.record("", KIND_FUNC_PROTO, false, 1, 1);
    b.words(&[0, 1]); // anonymous parameter of type 1
    b.record("e", KIND_ENUM, false, 2, 4);
    let (x, y) = (b.string("X"), b.string("Y"));
    b.words(&[x, 0, y, 1]);
    b.record("", KIND_ARRAY, false, 0, 0);
    b.words(&[1, 1, 3]); // elem type, index type, nelems
    b.record("int_t", KIND_TYPEDEF, false, 0, 1);
    b.record("s", KIND_STRUCT, true, 3, 20);
    let (a, bb, f) = (b.string("a"), b.string("b"), b.string("f"));
    b.words(&[a, 5, 0, bb, 4, 32, f, 1, (3 << 24) | 128]);
    b.finish()
}

#[test]
fn parser_reads_hand_built_struct() {
    let btf = Btf::parse(&sample_btf()).unwrap();
    let member = |name: &str, bit_offset, bitfield_size, size| Member {
        name: name.into(),
        bit_offset,
        bitfield_size,
        size,
    };
    assert_eq!(
        btf.struct_layout("s").unwrap(),
        StructLayout {
            size: 20,
            members: vec![member("a", 0, 0, 4), member("b", 32, 0, 12), member("f", 128, 3, 4)],
        }
    );
}

#[test]
fn parser_rejects_bad_input() {
    let good = sample_btf();
    let btf = Btf::parse(&good).unwrap();
    // Only STRUCTs are looked up, by exact name.
    assert!(btf.struct_layout("e").is_err());
    assert!(btf.struct_layout("S").is_err());

    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0xff;
    assert!(Btf::parse(&bad_magic).unwrap_err().contains("magic"));

    // Sections that claim more bytes than the blob has.
    assert!(Btf::parse(&good[..good.len() - 1]).unwrap_err().contains("string section"));
    assert!(Btf::parse(&good[..10]).is_err());

    // A kind this parser does not know cannot be skipped safely.
    let mut unknown_kind = good;
    unknown_kind[BTF_HEADER_LEN + 7] = 31; // top byte of the first record's info
    assert!(Btf::parse(&unknown_kind).unwrap_err().contains("unknown kind"));
}

/// The checker flags a bitfield member and a wrong-size member on the hand
/// built struct, and accepts a mirror that matches everything but those.
#[test]
fn compare_reports_bitfields_and_sizes() {
    let btf = Btf::parse(&sample_btf()).unwrap();
    #[repr(C)]
    #[allow(dead_code)]
    struct S {
        a: i32,
        b: [i32; 2], // 8 bytes where C has 12
        f: u32,
    }
    let errors = compare_layout!(&btf, "s", S { a, b, f });
    assert!(errors.iter().any(|e| e.contains("S.b: size is 12 bytes in C but 8")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("S.f: is a 3-bit bitfield")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("S (C struct s): size is 20 bytes in C but 16")), "{errors:?}");
    assert!(!errors.iter().any(|e| e.contains("S.a")), "{errors:?}");
}
