//! The schemas of fields whose constraints a Rust type does not say: what
//! the handlers and the Balancer accept, exactly, so that generated clients
//! and fuzzers agree with the server. A value these schemas accept can still
//! be refused for what no schema says (a loopback address, an unknown VIP).

use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use weir_abi::{Protocol, RealFlags, VipFlags};

fn build(b: ObjectBuilder) -> RefOr<Schema> {
    RefOr::T(Schema::Object(b.build()))
}

fn integer(description: &str, min: u32, max: u32) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(min)).maximum(Some(max)).description(Some(description))
}

/// An integer that is one of `values`.
fn one_of<const N: usize>(description: &str, values: [u32; N]) -> RefOr<Schema> {
    build(ObjectBuilder::new().schema_type(Type::Integer).enum_values(Some(values)).description(Some(description)))
}

fn text(description: &str, pattern: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
}

/// Addresses are parsed by Rust's `IpAddr`: IPv4 dotted quads (no
/// leading zeros) or IPv6 text; the custom format `ip` says "either".
pub(crate) fn address() -> RefOr<Schema> {
    build(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("ip".into())))
            .description(Some(
                "An IPv4 (`10.0.0.1`) or IPv6 (`2001:db8::1`) address. VIPs and reals must be unicast, not \
                 loopback, not IPv4-mapped or IPv4-compatible IPv6 (400).",
            ))
            .examples(["10.0.0.1"]),
    )
}

pub(crate) fn port() -> RefOr<Schema> {
    build(integer("A TCP or UDP port; 0 is every port of a VIP.", 0, 65535).examples([80]))
}

/// The VIP protocols of weir-abi's table: "6 TCP, 17 UDP".
pub(crate) fn proto() -> RefOr<Schema> {
    let numbers = Protocol::ALL.map(|p| u32::from(p.number()));
    let names: Vec<String> = Protocol::ALL.iter().map(|p| format!("{} {}", p.number(), p.name())).collect();
    one_of(&names.join(", "), numbers)
}

/// `NO_SPORT 1, NO_LRU 2`: the names and bits of `flags`, from weir-abi's table.
fn flag_list(flags: VipFlags) -> String {
    flags.iter_names().map(|(name, flag)| format!("{name} {}", flag.bits())).collect::<Vec<_>>().join(", ")
}

/// Katran's VIP flags (weir-abi's table); bits no flag uses are 400, flags
/// the datapath does not honour (outside `VipFlags::SUPPORTED`) 501.
pub(crate) fn vip_flags() -> RefOr<Schema> {
    let description = format!(
        "Katran VIP flag bits: {}; {} answer 501. Default 0.",
        flag_list(VipFlags::SUPPORTED),
        flag_list(VipFlags::all().difference(VipFlags::SUPPORTED))
    );
    build(integer(&description, 0, VipFlags::all().bits()))
}

pub(crate) fn real_flags() -> RefOr<Schema> {
    build(integer(
        "Real flag bits: LOCAL_REAL 2; IPV6 1 follows the address (400 on an IPv4 real). Default 0.",
        0,
        RealFlags::all().bits().into(),
    ))
}

/// The Katran features `/features/*` know (`features::FEATURES`).
pub(crate) fn feature() -> RefOr<Schema> {
    one_of(
        "SrcRouting 1, InlineDecap 2, Introspection 4, GUEEncap 8, DirectHC 16, LocalDeliveryOpt 32, FlowDebug 64",
        [1, 2, 4, 8, 16, 32, 64],
    )
}

pub(crate) fn action() -> RefOr<Schema> {
    one_of("0 add (or update), 1 delete", [0, 1])
}

pub(crate) fn hash_func() -> RefOr<Schema> {
    one_of("0 Maglev, 1 Maglev V2", [0, 1])
}

pub(crate) fn optional_hash_func() -> RefOr<Schema> {
    build(
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
            .enum_values(Some([Some(0), Some(1), None]))
            .description(Some("The original API's hash function of new VIPs: 0 Maglev, 1 Maglev V2")),
    )
}

/// `"maglev"` or `"maglev_v2"` in any case, surrounding whitespace
/// trimmed; blank (or null) is Maglev V2.
pub(crate) fn hash_function_name() -> RefOr<Schema> {
    build(
        text(
            "The current API's name of the hash function: \"maglev\" or \"maglev_v2\" (any case; blank is \
             maglev_v2)",
            r"^\s*([mM][aA][gG][lL][eE][vV](_[vV]2)?)?\s*$",
            "maglev_v2",
        )
        .schema_type(SchemaType::from_iter([Type::String, Type::Null])),
    )
}

/// `parse_mac`: six two-digit hex octets separated by `:` or `-`.
const MAC: &str = "[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}";

pub(crate) fn mac() -> RefOr<Schema> {
    build(text("A MAC address: six hex octets separated by `:` or `-`", &format!("^{MAC}$"), "aa:bb:cc:dd:ee:ff"))
}

/// In `/lb/create` an empty MAC (or null) is the default.
pub(crate) fn optional_mac() -> RefOr<Schema> {
    build(
        text(
            "A MAC address: six hex octets separated by `:` or `-`; empty or null is the default",
            &format!("^({MAC})?$"),
            "aa:bb:cc:dd:ee:ff",
        )
        .schema_type(SchemaType::from_iter([Type::String, Type::Null])),
    )
}

/// Standard base64 with padding, as the `base64` crate's STANDARD engine
/// decodes it (the unused bits of the last symbol zero), ASCII whitespace
/// anywhere (the handler drops it: `base64` wraps at 76 columns).
pub(crate) fn base64() -> RefOr<Schema> {
    const W: &str = r"[\t\n\x0C\r ]*";
    const C: &str = "[A-Za-z0-9+/]";
    let pattern =
        format!("^{W}({C}{W}{C}{W}{C}{W}{C}{W})*({C}{W}[AQgw]{W}={W}={W}|{C}{W}{C}{W}[AEIMQUYcgkosw048]{W}={W})?$");
    build(text("An Ethernet frame, standard base64 (with padding)", &pattern, "AAAAAAAAAAAAAAAAAAAAAA=="))
}
