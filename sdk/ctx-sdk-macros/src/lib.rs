//! The attributes of `ctx-sdk`: `#[state]` on the app's state struct and
//! `#[app]` on its `impl` block. See the `ctx-sdk` crate for what they mean;
//! this crate only generates code.
//!
//! Owns the checks an app's shape must pass at compile time, each an error
//! at the offending span: a state struct has named fields and no generics,
//! and its collection prefixes are prefix-free (no prefix starts another,
//! so no two collections share a storage key); an `#[app]` block is an
//! inherent impl whose `pub fn`s take `&self` or `&mut self`, owned
//! parameters bound to plain names, no generics and no `async`, with names
//! of at most 64 bytes (`METHOD_NAME_BYTES_MAX`); a method marked
//! `#[invariant]` is a `pub fn` of such a block that takes `&self` and
//! nothing else and returns `Result<(), E>` (the attribute is consumed by
//! `#[app]`; anywhere else it is an error).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Error, Expr, ExprLit, FnArg, ImplItem, ItemImpl, ItemStruct, Lit, Meta, Pat, ReturnType, Type,
    parse_macro_input,
};

const METHOD_NAME_BYTES_MAX: usize = 64;

/// Makes a struct of collections an app's state: each field is the
/// collection at the prefix `"<field name>:"`, or at the one a
/// `#[prefix = "..."]` (text or `b"..."`) on the field names.
#[proc_macro_attribute]
pub fn state(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return Error::new(Span::call_site(), "#[state] takes no arguments")
            .to_compile_error()
            .into();
    }
    let item = parse_macro_input!(item as ItemStruct);
    match expand_state(item) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand_state(mut item: ItemStruct) -> syn::Result<TokenStream2> {
    if !item.generics.params.is_empty() {
        return Err(Error::new(
            item.generics.span(),
            "an app's state has no generic parameters",
        ));
    }
    let name = item.ident.clone();
    let mut inits = Vec::new();
    let mut prefixes: Vec<(Vec<u8>, Span)> = Vec::new();
    match &mut item.fields {
        syn::Fields::Named(fields) => {
            for field in &mut fields.named {
                let ident = field.ident.clone().expect("named fields have names");
                let mut prefix = None;
                let mut kept = Vec::new();
                for attr in field.attrs.drain(..) {
                    if attr.path().is_ident("prefix") {
                        prefix = Some(prefix_of(&attr.meta)?);
                    } else {
                        kept.push(attr);
                    }
                }
                field.attrs = kept;
                let prefix = prefix.unwrap_or_else(|| {
                    format!("{}:", ident.to_string().trim_start_matches("r#")).into_bytes()
                });
                for (other, _) in &prefixes {
                    if other.starts_with(&prefix) || prefix.starts_with(other) {
                        return Err(Error::new(
                            ident.span(),
                            format!(
                                "the prefix {:?} of `{ident}` and the prefix {:?} of another field overlap: one starts the other, so their keys could collide",
                                String::from_utf8_lossy(&prefix),
                                String::from_utf8_lossy(other)
                            ),
                        ));
                    }
                }
                prefixes.push((prefix.clone(), ident.span()));
                let ty = &field.ty;
                let bytes = syn::LitByteStr::new(&prefix, ident.span());
                inits.push(quote_spanned! {ty.span()=>
                    #ident: <#ty as ::ctx_sdk::Collection>::at(#bytes)
                });
            }
        }
        syn::Fields::Unit => {}
        syn::Fields::Unnamed(fields) => {
            return Err(Error::new(
                fields.span(),
                "an app's state has named fields (each one collection)",
            ));
        }
    }
    let body = match item.fields {
        syn::Fields::Unit => quote!(#name),
        _ => quote!(#name { #(#inits),* }),
    };
    Ok(quote! {
        #item
        impl ::ctx_sdk::State for #name {
            fn load() -> Self {
                #body
            }
        }
    })
}

fn prefix_of(meta: &Meta) -> syn::Result<Vec<u8>> {
    let Meta::NameValue(pair) = meta else {
        return Err(Error::new(
            meta.span(),
            "write the prefix as #[prefix = \"...\"]",
        ));
    };
    match &pair.value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Ok(text.value().into_bytes()),
        Expr::Lit(ExprLit {
            lit: Lit::ByteStr(bytes),
            ..
        }) => Ok(bytes.value()),
        other => Err(Error::new(
            other.span(),
            "a prefix is a string or byte string literal",
        )),
    }
}

/// Exports the `pub fn`s of an inherent impl block of the state type as the
/// app's methods, and embeds the ABI.
#[proc_macro_attribute]
pub fn app(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return Error::new(Span::call_site(), "#[app] takes no arguments")
            .to_compile_error()
            .into();
    }
    let item = parse_macro_input!(item as ItemImpl);
    match expand_app(item) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// Marks a method of an `#[app]` block as an invariant of the app's
/// state. `#[app]` consumes it; this attribute only reports misuse, on an
/// item that is not in an `#[app]` block.
#[proc_macro_attribute]
pub fn invariant(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    let error = Error::new(
        Span::call_site(),
        "#[invariant] marks a `pub fn` inside an #[app] impl block",
    )
    .to_compile_error();
    quote!(#error #item).into()
}

struct MethodInfo {
    ident: syn::Ident,
    name: String,
    view: bool,
    invariant: bool,
    params: Vec<(syn::Ident, String, Type)>,
    returns: Type,
}

fn expand_app(mut item: ItemImpl) -> syn::Result<TokenStream2> {
    if let Some((_, path, _)) = &item.trait_ {
        return Err(Error::new(
            path.span(),
            "#[app] goes on the state type's own impl block, not a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(Error::new(
            item.generics.span(),
            "an app's impl block has no generic parameters",
        ));
    }
    let mut methods = Vec::new();
    for member in &mut item.items {
        let ImplItem::Fn(function) = member else {
            continue;
        };
        let invariant = take_invariant(function)?;
        if !matches!(function.vis, syn::Visibility::Public(_)) {
            if let Some(span) = invariant {
                return Err(Error::new(
                    span,
                    "an #[invariant] is a `pub fn`: the app exports it for tools to call",
                ));
            }
            continue;
        }
        let mut method = method_info(function)?;
        if invariant.is_some() {
            check_invariant(function, &method)?;
            method.invariant = true;
        }
        methods.push(method);
    }
    let self_ty = &item.self_ty;
    let specs = methods.iter().map(spec_of);
    let arms = methods.iter().map(|method| {
        let name = &method.name;
        let runner = runner_ident(method);
        quote! { #name => ::core::option::Option::Some(Self::#runner(input)), }
    });
    let runners = methods.iter().map(runner_of);
    let exports = methods.iter().map(|method| {
        let name = &method.name;
        let export = format_ident!("__ctx_export_{}", method.name);
        quote! {
            #[unsafe(export_name = #name)]
            pub extern "C" fn #export() {
                ::ctx_sdk::__private::export::<#self_ty>(#name)
            }
        }
    });
    Ok(quote! {
        #item

        #[doc(hidden)]
        impl #self_ty {
            #(#runners)*
        }

        impl ::ctx_sdk::App for #self_ty {
            const ABI: &'static ::ctx_sdk::abi::Spec = &::ctx_sdk::abi::Spec {
                methods: &[#(#specs),*],
            };

            fn dispatch(
                method: &str,
                input: &[u8],
            ) -> ::core::option::Option<::core::result::Result<::std::vec::Vec<u8>, ::std::string::String>> {
                match method {
                    #(#arms)*
                    _ => ::core::option::Option::None,
                }
            }
        }

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #(#exports)*

            const ABI_LEN: usize = ::ctx_sdk::abi::json_len(<#self_ty as ::ctx_sdk::App>::ABI);
            #[unsafe(link_section = "ctx_abi")]
            #[used]
            static ABI_SECTION: [u8; ABI_LEN] =
                ::ctx_sdk::abi::json::<ABI_LEN>(<#self_ty as ::ctx_sdk::App>::ABI);
        };
    })
}

/// Removes `#[invariant]` (or `#[ctx_sdk::invariant]`) from a method's
/// attributes: its span if it was there.
fn take_invariant(function: &mut syn::ImplItemFn) -> syn::Result<Option<Span>> {
    let mut found = None;
    let mut kept = Vec::new();
    for attr in function.attrs.drain(..) {
        let path = attr.path();
        let is_invariant = path.segments.last().is_some_and(|s| s.ident == "invariant")
            && (path.segments.len() == 1
                || (path.segments.len() == 2 && path.segments[0].ident == "ctx_sdk"));
        if !is_invariant {
            kept.push(attr);
            continue;
        }
        if !matches!(attr.meta, Meta::Path(_)) {
            return Err(Error::new(attr.span(), "#[invariant] takes no arguments"));
        }
        if found.is_some() {
            return Err(Error::new(attr.span(), "#[invariant] is given twice"));
        }
        found = Some(attr.span());
    }
    function.attrs = kept;
    Ok(found)
}

/// An invariant reads the state (`&self`), takes nothing (a tool calls it
/// with no input) and returns `Result<(), E>`: `Ok` holds, `Err` says what
/// is violated.
fn check_invariant(function: &syn::ImplItemFn, method: &MethodInfo) -> syn::Result<()> {
    let sig = &function.sig;
    if !method.view {
        let receiver = sig.inputs.first().map_or(sig.span(), Spanned::span);
        return Err(Error::new(
            receiver,
            "an #[invariant] takes &self, not &mut self: it reads the state and never writes it",
        ));
    }
    if let Some(extra) = sig.inputs.iter().nth(1) {
        return Err(Error::new(
            extra.span(),
            "an #[invariant] takes no parameters: it is called with none, after every change",
        ));
    }
    if !returns_unit_result(&sig.output) {
        let span = match &sig.output {
            ReturnType::Default => sig.ident.span(),
            ReturnType::Type(_, ty) => ty.span(),
        };
        return Err(Error::new(
            span,
            "an #[invariant] returns Result<(), E> with E: Display (Ok: it holds; Err: violated, with the message)",
        ));
    }
    Ok(())
}

/// Whether a return type is written `Result<(), _>` (any path ending in
/// `Result`).
fn returns_unit_result(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    let Type::Path(path) = &**ty else {
        return false;
    };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    last.ident == "Result"
        && args.args.len() == 2
        && matches!(args.args.first(), Some(syn::GenericArgument::Type(Type::Tuple(unit))) if unit.elems.is_empty())
}

fn method_info(function: &syn::ImplItemFn) -> syn::Result<MethodInfo> {
    let sig = &function.sig;
    let ident = sig.ident.clone();
    let name = ident.to_string().trim_start_matches("r#").to_owned();
    if name.len() > METHOD_NAME_BYTES_MAX {
        return Err(Error::new(
            ident.span(),
            format!("a method name is at most {METHOD_NAME_BYTES_MAX} bytes"),
        ));
    }
    if let Some(asyncness) = &sig.asyncness {
        return Err(Error::new(asyncness.span(), "app methods are not async"));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new(
            sig.generics.span(),
            "app methods have no generic parameters",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let view = match inputs.next() {
        Some(FnArg::Receiver(receiver)) if receiver.reference.is_some() => {
            receiver.mutability.is_none()
        }
        Some(other) => {
            return Err(Error::new(
                other.span(),
                "an app method takes &self (a view) or &mut self (a call) first",
            ));
        }
        None => {
            return Err(Error::new(
                sig.span(),
                "an app method takes &self (a view) or &mut self (a call) first",
            ));
        }
    };
    let mut params = Vec::new();
    for input in inputs {
        let FnArg::Typed(typed) = input else {
            return Err(Error::new(input.span(), "one receiver only"));
        };
        let Pat::Ident(pat) = &*typed.pat else {
            return Err(Error::new(
                typed.pat.span(),
                "a parameter of an app method is a plain name",
            ));
        };
        if matches!(&*typed.ty, Type::Reference(_)) {
            return Err(Error::new(
                typed.ty.span(),
                "a parameter of an app method is an owned value (String, not &str)",
            ));
        }
        let param_name = pat.ident.to_string().trim_start_matches("r#").to_owned();
        params.push((pat.ident.clone(), param_name, (*typed.ty).clone()));
    }
    let returns = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    Ok(MethodInfo {
        ident,
        name,
        view,
        invariant: false,
        params,
        returns,
    })
}

fn spec_of(method: &MethodInfo) -> TokenStream2 {
    let name = &method.name;
    let kind = if method.view {
        quote!(::ctx_sdk::abi::Kind::View)
    } else {
        quote!(::ctx_sdk::abi::Kind::Call)
    };
    let params = method.params.iter().map(|(_, param, ty)| {
        quote! {
            ::ctx_sdk::abi::Param {
                name: #param,
                ty: ::ctx_sdk::__private::type_of::<#ty>(),
            }
        }
    });
    let returns = &method.returns;
    let invariant = method.invariant;
    quote! {
        ::ctx_sdk::abi::Method {
            name: #name,
            kind: #kind,
            params: &[#(#params),*],
            returns: <#returns as ::ctx_sdk::Outcome>::RETURNS,
            fails: <#returns as ::ctx_sdk::Outcome>::FAILS,
            invariant: #invariant,
        }
    }
}

fn runner_ident(method: &MethodInfo) -> syn::Ident {
    format_ident!("__ctx_run_{}", method.name)
}

/// The function that decodes one method's arguments, runs it and encodes
/// its outcome.
fn runner_of(method: &MethodInfo) -> TokenStream2 {
    let ident = &method.ident;
    let runner = runner_ident(method);
    let decode = method.params.iter().map(|(binding, param, ty)| {
        quote! { let #binding: #ty = args.next(#param)?; }
    });
    let bindings = method.params.iter().map(|(binding, _, _)| binding);
    let args = if method.params.is_empty() {
        quote!(let args)
    } else {
        quote!(let mut args)
    };
    let (state, receiver) = if method.view {
        (quote!(let state), quote!(&state))
    } else {
        (quote!(let mut state), quote!(&mut state))
    };
    quote! {
        fn #runner(
            input: &[u8],
        ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
            #args = ::ctx_sdk::__private::Args::new(input);
            #(#decode)*
            args.finish()?;
            #state = <Self as ::ctx_sdk::State>::load();
            ::ctx_sdk::Outcome::into_return(Self::#ident(#receiver, #(#bindings),*))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(block: TokenStream2) -> String {
        let item: ItemImpl = syn::parse2(block).expect("an impl block");
        match expand_app(item) {
            Ok(_) => panic!("expected a compile error"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn an_invariant_is_marked_and_stripped() {
        let item: ItemImpl = syn::parse2(quote! {
            impl Bank {
                #[invariant]
                pub fn conserved(&self) -> Result<(), String> { Ok(()) }
            }
        })
        .expect("an impl block");
        let out = expand_app(item).expect("expands").to_string();
        assert!(out.contains("invariant : true"), "{out}");
        assert!(!out.contains("# [invariant]"), "{out}");
    }

    #[test]
    fn misused_invariants_are_clear_compile_errors() {
        let cases = [
            (
                quote! { impl A { #[invariant] pub fn i(&mut self) -> Result<(), String> { Ok(()) } } },
                "takes &self, not &mut self",
            ),
            (
                quote! { impl A { #[invariant] pub fn i(&self, x: u64) -> Result<(), String> { Ok(()) } } },
                "takes no parameters",
            ),
            (
                quote! { impl A { #[invariant] pub fn i(&self) -> u64 { 0 } } },
                "returns Result<(), E>",
            ),
            (
                quote! { impl A { #[invariant] pub fn i(&self) {} } },
                "returns Result<(), E>",
            ),
            (
                quote! { impl A { #[invariant] fn i(&self) -> Result<(), String> { Ok(()) } } },
                "is a `pub fn`",
            ),
            (
                quote! { impl A { #[invariant(x)] pub fn i(&self) -> Result<(), String> { Ok(()) } } },
                "takes no arguments",
            ),
        ];
        for (block, expected) in cases {
            let error = error_of(block);
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }
}
