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
//! of at most 64 bytes (`METHOD_NAME_BYTES_MAX`).

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

struct MethodInfo {
    ident: syn::Ident,
    name: String,
    view: bool,
    params: Vec<(syn::Ident, String, Type)>,
    returns: Type,
}

fn expand_app(item: ItemImpl) -> syn::Result<TokenStream2> {
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
    for member in &item.items {
        let ImplItem::Fn(function) = member else {
            continue;
        };
        if !matches!(function.vis, syn::Visibility::Public(_)) {
            continue;
        }
        methods.push(method_info(function)?);
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
    quote! {
        ::ctx_sdk::abi::Method {
            name: #name,
            kind: #kind,
            params: &[#(#params),*],
            returns: <#returns as ::ctx_sdk::Outcome>::RETURNS,
            fails: <#returns as ::ctx_sdk::Outcome>::FAILS,
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
