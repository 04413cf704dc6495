//! `#[noprobe]`: the one spelling of "the probe core must never probe this
//! function".
//!
//! The attribute puts the function in the `.text.noprobe` section; the
//! kernel's linker script gathers that section (with the trap entry and
//! every crate other than the kernel's own) between `__noprobe_start` and
//! `__noprobe_end`, and the probe core refuses any address in that range
//! (`ProbeError::Blacklisted`). Mark every kernel function the trap path
//! runs: the dispatcher, the scheduler switch, the heap, the console, the
//! kernel's side of the `kdbg` host interface. The end-to-end test
//! `tests/tests/noprobe.rs` checks the built kernel: every function the trap
//! entry reaches is inside the range.
//!
//! ```ignore
//! use noprobe::noprobe;
//!
//! #[noprobe]
//! pub fn dispatch(frame: &mut TrapFrame) { /* ... */ }
//! ```
//!
//! Only functions (free or in an `impl`) may be marked: a `static` in a text
//! section would be executable data, so anything else is a compile error.

use proc_macro::{Delimiter, Group, Ident, Punct, Spacing, Span, TokenStream, TokenTree};

/// The link section of unprobeable functions. The kernel's linker script
/// spells it once more (`*(.text.noprobe .text.noprobe.*)`).
const SECTION: &str = ".text.noprobe";

/// Puts the function in `.text.noprobe` (see the crate documentation).
#[proc_macro_attribute]
pub fn noprobe(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error("#[noprobe] takes no arguments", Span::call_site());
    }
    if !is_fn(&item) {
        return error("#[noprobe] marks functions only", Span::call_site());
    }
    // #[unsafe(link_section = ".text.noprobe")]
    let inner: TokenStream = [
        TokenTree::Ident(Ident::new("link_section", Span::call_site())),
        TokenTree::Punct(Punct::new('=', Spacing::Alone)),
        TokenTree::Literal(proc_macro::Literal::string(SECTION)),
    ]
    .into_iter()
    .collect();
    let unsafe_attr: TokenStream = [
        TokenTree::Ident(Ident::new("unsafe", Span::call_site())),
        TokenTree::Group(Group::new(Delimiter::Parenthesis, inner)),
    ]
    .into_iter()
    .collect();
    let mut out: TokenStream = [
        TokenTree::Punct(Punct::new('#', Spacing::Alone)),
        TokenTree::Group(Group::new(Delimiter::Bracket, unsafe_attr)),
    ]
    .into_iter()
    .collect();
    out.extend(item);
    out
}

/// The item is a function: after its attributes, visibility and qualifiers
/// (`const`, `unsafe`, `extern "C"`, ...) comes `fn`.
fn is_fn(item: &TokenStream) -> bool {
    let mut tokens = item.clone().into_iter().peekable();
    while let Some(t) = tokens.next() {
        match t {
            // `#[...]` (doc comments arrive as attributes too)
            TokenTree::Punct(p) if p.as_char() == '#' => {
                tokens.next();
            }
            TokenTree::Ident(i) => match i.to_string().as_str() {
                "fn" => return true,
                "pub" => {
                    // `pub(crate)`, `pub(super)`, ...
                    if matches!(tokens.peek(), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis)
                    {
                        tokens.next();
                    }
                }
                "const" | "unsafe" | "async" | "extern" | "safe" | "default" => {}
                _ => return false,
            },
            // the ABI string of `extern "C"`
            TokenTree::Literal(_) => {}
            _ => return false,
        }
    }
    false
}

/// `compile_error!("msg")` at `span`.
fn error(msg: &str, span: Span) -> TokenStream {
    let mut lit = proc_macro::Literal::string(msg);
    lit.set_span(span);
    let body: TokenStream = [TokenTree::Literal(lit)].into_iter().collect();
    [
        TokenTree::Ident(Ident::new("compile_error", span)),
        TokenTree::Punct(Punct::new('!', Spacing::Alone)),
        TokenTree::Group(Group::new(Delimiter::Parenthesis, body)),
        TokenTree::Punct(Punct::new(';', Spacing::Alone)),
    ]
    .into_iter()
    .collect()
}
