"""Namespace names a cleaner needs: which link prefixes are files, categories or other pages.

The dump's own ``<siteinfo>`` gives the local names (``Ficheiro``, ``Archivo``, ``Файл``...);
the Portuguese and English canonical names and common aliases are always added as a fallback,
because real dumps list only one name per namespace (ptwiki's ``Imagem:`` alias is not in it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FILE_NS = (6, -2)
CATEGORY_NS = 14

# Portuguese + English names and aliases, by namespace id (the fallback for every dump).
FALLBACK_NAMES: dict[int, tuple[str, ...]] = {
    -2: ("Media", "Multimédia", "Mídia"),
    -1: ("Special", "Especial"),
    1: ("Talk", "Discussão"),
    2: ("User", "Utilizador", "Usuário", "Usuária"),
    3: ("User talk", "Utilizador Discussão", "Usuário Discussão"),
    4: ("Wikipedia", "Wikipédia", "WP", "Project"),
    5: ("Wikipedia talk", "Wikipédia Discussão"),
    6: ("File", "Image", "Ficheiro", "Imagem", "Arquivo"),
    7: ("File talk", "Ficheiro Discussão"),
    8: ("MediaWiki",),
    10: ("Template", "Predefinição"),
    11: ("Template talk", "Predefinição Discussão"),
    12: ("Help", "Ajuda"),
    14: ("Category", "Categoria"),
    15: ("Category talk", "Categoria Discussão"),
    100: ("Portal",),
    102: ("Anexo",),
    828: ("Module", "Módulo"),
}


@dataclass(frozen=True)
class Namespaces:
    """Lower-cased link prefixes grouped by what the cleaner does with them."""

    files: frozenset[str]
    categories: frozenset[str]
    others: frozenset[str]

    def kind(self, prefix: str) -> str:
        """``file``, ``category``, ``other`` (a known namespace) or ``none``."""
        key = prefix.strip().replace("_", " ").lower()
        if key in self.files:
            return "file"
        if key in self.categories:
            return "category"
        return "other" if key in self.others else "none"


def build_namespaces(site_names: Mapping[int, Iterable[str]] | None = None) -> Namespaces:
    """Merge the dump's namespace names (id -> names) with the pt/en fallback."""
    merged: dict[int, set[str]] = {k: {n.lower() for n in v} for k, v in FALLBACK_NAMES.items()}
    for ns_id, names in (site_names or {}).items():
        merged.setdefault(ns_id, set()).update(n.replace("_", " ").lower() for n in names if n)
    files = frozenset().union(*(merged.get(i, set()) for i in FILE_NS))
    categories = frozenset(merged.get(CATEGORY_NS, set()))
    others = frozenset().union(*(v for k, v in merged.items() if k not in (*FILE_NS, CATEGORY_NS)))
    return Namespaces(files=files, categories=categories, others=others)


def siteinfo_names(site_info: object) -> dict[int, list[str]]:
    """id -> [name] from an mwxml ``SiteInfo`` (empty when the dump has no ``<siteinfo>``)."""
    names: dict[int, list[str]] = {}
    for ns in getattr(site_info, "namespaces", None) or []:
        if ns.id != 0 and ns.name:
            names.setdefault(int(ns.id), []).append(str(ns.name))
    return names
