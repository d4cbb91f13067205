"""Captions and queries for demo scenes in six languages, with each language's agreement rules.

Every sentence is the phrasing of a `Query` (a subset of a scene's attributes) with one of
`TEMPLATE_COUNT` templates. Template i says the same thing in every language (0: a bare noun phrase,
1: "a picture of ...", 2: "there is/are ..."), so a query and a template index give parallel sentences.
Counting is explicit: count None reads "a red star" (any number), count 1 reads "one red star" and in
languages whose article is also the numeral, "a single ..." ("ein einzelner", "un seul", "un solo").
"""

from __future__ import annotations

import random

from clip_search.demo.scenes import ATTRIBUTES, BACKGROUNDS, COLORS, COUNTS, POSITIONS, SHAPES, SIZES, Query, Scene, collection_of

LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "ru", "zh")
TEMPLATE_COUNT = 3
LABEL_KINDS: tuple[str, ...] = ATTRIBUTES

# The noun used when a query names no shape.
_ANY = "shape"

# ---------------------------------------------------------------------------------------------- English

_EN_NOUN = {s: (s, s + "s") for s in (*SHAPES, _ANY)}
_EN_COUNT = {1: "one", 2: "two", 3: "three"}
_EN_POS = {
    "left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
    "center": "in the center",
}
_EN_BG = {"grey": "on a grey background", "sand": "on a sand background", "turquoise": "on a turquoise background"}


def _en(q: Query, t: int) -> str:
    sg, pl = _EN_NOUN[q.shape or _ANY]
    words = [w for w in (q.size, q.color) if w]
    plural = bool(q.count and q.count > 1)
    if q.count is None:
        det = "an" if (words[0] if words else sg)[0] in "aeiou" else "a"
    else:
        det = _EN_COUNT[q.count]
    np = " ".join([det, *words, pl if plural else sg])
    loc = _join_loc(_EN_POS.get(q.position), _EN_BG.get(q.background), ", ")
    if t == 0:
        return np + loc
    if t == 1:
        return "a picture of " + np + loc
    return f"there {'are' if plural else 'is'} {np}{loc}"


def _join_loc(pos: str | None, bg: str | None, sep_before_bg: str = " ") -> str:
    out = ""
    if pos:
        out += " " + pos
    if bg:
        out += (sep_before_bg if pos else " ") + bg
    return out


# ---------------------------------------------------------------------------------------------- German
# noun: gender, nominative/accusative singular, dative singular, plural (nom/acc), dative plural

_DE_NOUN = {
    "circle": ("m", "Kreis", "Kreis", "Kreise", "Kreisen"),
    "square": ("n", "Quadrat", "Quadrat", "Quadrate", "Quadraten"),
    "triangle": ("n", "Dreieck", "Dreieck", "Dreiecke", "Dreiecken"),
    "star": ("m", "Stern", "Stern", "Sterne", "Sternen"),
    "heart": ("n", "Herz", "Herzen", "Herzen", "Herzen"),
    _ANY: ("f", "Form", "Form", "Formen", "Formen"),
}
_DE_ADJ = {
    "small": "klein", "large": "groß",
    "red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb",
    "orange": "orangefarben", "purple": "violett", "white": "weiß", "black": "schwarz",
}
# indefinite article and the (mixed) adjective ending after it, by case and gender
_DE_ART = {
    ("nom", "m"): ("ein", "er"), ("nom", "n"): ("ein", "es"), ("nom", "f"): ("eine", "e"),
    ("acc", "m"): ("einen", "en"), ("acc", "n"): ("ein", "es"), ("acc", "f"): ("eine", "e"),
    ("dat", "m"): ("einem", "en"), ("dat", "n"): ("einem", "en"), ("dat", "f"): ("einer", "en"),
}
_DE_COUNT = {2: "zwei", 3: "drei"}
_DE_POS = {"left": "links", "right": "rechts", "top": "oben", "bottom": "unten", "center": "in der Mitte"}
_DE_BG = {
    "grey": "auf grauem Hintergrund",
    "sand": "auf sandfarbenem Hintergrund",
    "turquoise": "auf türkisfarbenem Hintergrund",
}


def _de_np(q: Query, case: str) -> str:
    gender, sg, sg_dat, pl, pl_dat = _DE_NOUN[q.shape or _ANY]
    stems = [_DE_ADJ[w] for w in (q.size, q.color) if w]
    if q.count is None or q.count == 1:
        article, ending = _DE_ART[(case, gender)]
        if q.count == 1:
            stems.insert(0, "einzeln")
        noun = sg_dat if case == "dat" else sg
        return " ".join([article, *(s + ending for s in stems), noun])
    ending = "en" if case == "dat" else "e"  # strong plural after an uninflected numeral
    noun = pl_dat if case == "dat" else pl
    return " ".join([_DE_COUNT[q.count], *(s + ending for s in stems), noun])


def _de(q: Query, t: int) -> str:
    loc = _join_loc(_DE_POS.get(q.position), _DE_BG.get(q.background))
    if t == 0:
        return _de_np(q, "nom") + loc
    if t == 1:
        return "ein Bild mit " + _de_np(q, "dat") + loc
    return "es gibt " + _de_np(q, "acc") + loc


# ---------------------------------------------------------------------------------------------- French

_FR_NOUN = {
    "circle": ("m", "cercle", "cercles"),
    "square": ("m", "carré", "carrés"),
    "triangle": ("m", "triangle", "triangles"),
    "star": ("f", "étoile", "étoiles"),
    "heart": ("m", "cœur", "cœurs"),
    _ANY: ("f", "forme", "formes"),
}
# forms: masculine singular, feminine singular, masculine plural, feminine plural
_FR_ADJ = {
    "small": ("petit", "petite", "petits", "petites"),
    "large": ("grand", "grande", "grands", "grandes"),
    "red": ("rouge", "rouge", "rouges", "rouges"),
    "green": ("vert", "verte", "verts", "vertes"),
    "blue": ("bleu", "bleue", "bleus", "bleues"),
    "yellow": ("jaune", "jaune", "jaunes", "jaunes"),
    "orange": ("orange",) * 4,  # a colour named after a noun: invariable
    "purple": ("violet", "violette", "violets", "violettes"),
    "white": ("blanc", "blanche", "blancs", "blanches"),
    "black": ("noir", "noire", "noirs", "noires"),
}
_FR_DET = {None: ("un", "une"), 1: ("un seul", "une seule"), 2: ("deux", "deux"), 3: ("trois", "trois")}
_FR_POS = {"left": "à gauche", "right": "à droite", "top": "en haut", "bottom": "en bas", "center": "au centre"}
_FR_BG = {"grey": "sur fond gris", "sand": "sur fond sable", "turquoise": "sur fond turquoise"}


def _agree(forms: tuple[str, str, str, str], gender: str, plural: bool) -> str:
    return forms[(2 if plural else 0) + (1 if gender == "f" else 0)]


def _fr_np(q: Query) -> str:
    gender, sg, pl = _FR_NOUN[q.shape or _ANY]
    plural = bool(q.count and q.count > 1)
    det = _FR_DET[q.count][gender == "f"]
    size = [_agree(_FR_ADJ[q.size], gender, plural)] if q.size else []  # petit, grand: before the noun
    color = [_agree(_FR_ADJ[q.color], gender, plural)] if q.color else []  # colours: after the noun
    return " ".join([det, *size, pl if plural else sg, *color])


def _fr(q: Query, t: int) -> str:
    np = _fr_np(q)
    loc = _join_loc(_FR_POS.get(q.position), _FR_BG.get(q.background))
    if t == 0:
        return np + loc
    if t == 1:
        return "une image " + ("d'" + np if np.startswith("un") else "de " + np) + loc
    return "il y a " + np + loc


# ---------------------------------------------------------------------------------------------- Spanish

_ES_NOUN = {
    "circle": ("m", "círculo", "círculos"),
    "square": ("m", "cuadrado", "cuadrados"),
    "triangle": ("m", "triángulo", "triángulos"),
    "star": ("f", "estrella", "estrellas"),
    "heart": ("m", "corazón", "corazones"),
    _ANY: ("f", "figura", "figuras"),
}
_ES_ADJ = {
    "small": ("pequeño", "pequeña", "pequeños", "pequeñas"),
    "large": ("grande", "grande", "grandes", "grandes"),
    "red": ("rojo", "roja", "rojos", "rojas"),
    "green": ("verde", "verde", "verdes", "verdes"),
    "blue": ("azul", "azul", "azules", "azules"),
    "yellow": ("amarillo", "amarilla", "amarillos", "amarillas"),
    "orange": ("naranja",) * 4,  # a colour named after a noun: invariable
    "purple": ("morado", "morada", "morados", "moradas"),
    "white": ("blanco", "blanca", "blancos", "blancas"),
    "black": ("negro", "negra", "negros", "negras"),
}
_ES_DET = {None: ("un", "una"), 1: ("un solo", "una sola"), 2: ("dos", "dos"), 3: ("tres", "tres")}
_ES_POS = {
    "left": "a la izquierda", "right": "a la derecha", "top": "arriba", "bottom": "abajo", "center": "en el centro",
}
_ES_BG = {"grey": "sobre fondo gris", "sand": "sobre fondo arena", "turquoise": "sobre fondo turquesa"}


def _es_np(q: Query) -> str:
    gender, sg, pl = _ES_NOUN[q.shape or _ANY]
    plural = bool(q.count and q.count > 1)
    det = _ES_DET[q.count][gender == "f"]
    adjs = [_agree(_ES_ADJ[w], gender, plural) for w in (q.color, q.size) if w]  # noun, colour, size
    return " ".join([det, pl if plural else sg, *adjs])


def _es(q: Query, t: int) -> str:
    np = _es_np(q)
    loc = _join_loc(_ES_POS.get(q.position), _ES_BG.get(q.background))
    if t == 0:
        return np + loc
    if t == 1:
        return "una imagen de " + np + loc
    return "hay " + np + loc


# ---------------------------------------------------------------------------------------------- Russian
# noun: gender, nominative singular, genitive singular (after 2-4), instrumental singular, instrumental plural

_RU_NOUN = {
    "circle": ("m", "круг", "круга", "кругом", "кругами"),
    "square": ("m", "квадрат", "квадрата", "квадратом", "квадратами"),
    "triangle": ("m", "треугольник", "треугольника", "треугольником", "треугольниками"),
    "star": ("f", "звезда", "звезды", "звездой", "звёздами"),
    "heart": ("n", "сердце", "сердца", "сердцем", "сердцами"),
    _ANY: ("f", "фигура", "фигуры", "фигурой", "фигурами"),
}
# adjective endings by stem type: nom m, nom f, nom n, nom pl, gen pl, ins m/n, ins f, ins pl
_RU_ENDINGS = {
    "hard": ("ый", "ая", "ое", "ые", "ых", "ым", "ой", "ыми"),
    "soft": ("ий", "яя", "ее", "ие", "их", "им", "ей", "ими"),
    "velar": ("ий", "ая", "ое", "ие", "их", "им", "ой", "ими"),
    "stressed": ("ой", "ая", "ое", "ие", "их", "им", "ой", "ими"),
}
_RU_ADJ = {
    "small": ("маленьк", "velar"), "large": ("больш", "stressed"),
    "red": ("красн", "hard"), "green": ("зелён", "hard"), "blue": ("син", "soft"), "yellow": ("жёлт", "hard"),
    "orange": ("оранжев", "hard"), "purple": ("фиолетов", "hard"),
    "white": ("бел", "hard"), "black": ("чёрн", "hard"),
}
_RU_SLOT = {
    "nom_m": 0, "nom_f": 1, "nom_n": 2, "nom_pl": 3, "gen_pl": 4, "ins_m": 5, "ins_n": 5, "ins_f": 6, "ins_pl": 7,
}
_RU_ONE = {"nom": {"m": "один", "f": "одна", "n": "одно"}, "ins": {"m": "одним", "f": "одной", "n": "одним"}}
_RU_MANY = {"nom": {2: ("два", "две"), 3: ("три", "три")}, "ins": {2: ("двумя", "двумя"), 3: ("тремя", "тремя")}}
_RU_POS = {"left": "слева", "right": "справа", "top": "сверху", "bottom": "снизу", "center": "в центре"}
_RU_BG = {"grey": "на сером фоне", "sand": "на песочном фоне", "turquoise": "на бирюзовом фоне"}


def _ru_adj(word: str, form: str) -> str:
    stem, kind = _RU_ADJ[word]
    return stem + _RU_ENDINGS[kind][_RU_SLOT[form]]


def _ru_np(q: Query, case: str) -> str:
    gender, nom_sg, gen_sg, ins_sg, ins_pl = _RU_NOUN[q.shape or _ANY]
    attrs = [w for w in (q.size, q.color) if w]
    if q.count is None or q.count == 1:
        words = [_RU_ONE[case][gender]] if q.count == 1 else []
        words += [_ru_adj(w, f"{case}_{gender}") for w in attrs]
        words.append(nom_sg if case == "nom" else ins_sg)
    elif case == "nom":
        # 2-3: numeral + adjective in the genitive plural (feminine: nominative plural) + genitive singular noun
        words = [_RU_MANY["nom"][q.count][gender == "f"]]
        words += [_ru_adj(w, "nom_pl" if gender == "f" else "gen_pl") for w in attrs]
        words.append(gen_sg)
    else:
        # in the instrumental, numeral, adjectives and noun all agree in the plural
        words = [_RU_MANY["ins"][q.count][gender == "f"], *(_ru_adj(w, "ins_pl") for w in attrs), ins_pl]
    return " ".join(words)


def _ru_with(np: str) -> str:
    # "с" becomes "со" before с/з/ш/ж followed by a consonant ("со звездой")
    vowels = "аеёиоуыэюя"
    head = "со" if np[0] in "сзшж" and len(np) > 1 and np[1] not in vowels else "с"
    return head + " " + np


def _ru(q: Query, t: int) -> str:
    loc = _join_loc(_RU_POS.get(q.position), _RU_BG.get(q.background))
    if t == 0:
        return _ru_np(q, "nom") + loc
    if t == 1:
        return "изображение " + _ru_with(_ru_np(q, "ins")) + loc
    return "на картинке " + _ru_np(q, "nom") + loc


# ---------------------------------------------------------------------------------------------- Chinese

_ZH_NOUN = {
    "circle": ("圆形", "个"),
    "square": ("正方形", "个"),
    "triangle": ("三角形", "个"),
    "star": ("星星", "颗"),
    "heart": ("爱心", "个"),
    _ANY: ("图形", "个"),
}
_ZH_COLOR = {
    "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色",
    "orange": "橙色", "purple": "紫色", "white": "白色", "black": "黑色",
}
_ZH_SIZE = {"small": "小", "large": "大"}
_ZH_COUNT = {1: "一", 2: "两", 3: "三"}
_ZH_POS = {"left": "左边", "right": "右边", "top": "上方", "bottom": "下方", "center": "中间"}
_ZH_BG = {"grey": "灰色", "sand": "沙色", "turquoise": "青色"}


def _zh_np(q: Query) -> str:
    noun, measure = _ZH_NOUN[q.shape or _ANY]
    out = _ZH_COUNT[q.count] + measure if q.count else ""
    if q.color:
        out += _ZH_COLOR[q.color] + "的"
    if q.size:
        out += _ZH_SIZE[q.size]
    return out + noun


def _zh(q: Query, t: int) -> str:
    np = _zh_np(q)
    pos = _ZH_POS.get(q.position)
    bg = _ZH_BG.get(q.background)
    if t == 0:
        if pos and bg:
            return f"{bg}背景的{pos}有{np}"
        if bg:
            return f"{bg}背景上有{np}"
        return f"{pos or ''}有{np}"
    if t == 1:
        return np + (f"，位于{pos}" if pos else "") + (f"，背景为{bg}" if bg else "")
    return "图片里有" + np + (f"，在{pos}" if pos else "") + (f"，背景是{bg}的" if bg else "")


_PHRASERS = {"en": _en, "de": _de, "fr": _fr, "es": _es, "ru": _ru, "zh": _zh}

# ---------------------------------------------------------------------------------------------- public API


def _check_lang(lang: str) -> None:
    if lang not in _PHRASERS:
        raise ValueError(f"unknown language {lang!r}; expected one of {', '.join(LANGUAGES)}")


def query_text(query: Query, lang: str, template_index: int = 0) -> str:
    """The query phrased in `lang` with template `template_index` (0 to TEMPLATE_COUNT - 1)."""
    _check_lang(lang)
    if not 0 <= template_index < TEMPLATE_COUNT:
        raise ValueError(f"template_index must be in 0..{TEMPLATE_COUNT - 1}, not {template_index}")
    return _PHRASERS[lang](query, template_index)


def full_caption(scene: Scene, lang: str, template_index: int = 0) -> str:
    """A caption naming all six attributes of the scene."""
    return query_text(Query.from_scene(scene), lang, template_index)


# Catalogue notes: what a photo archive writes about a picture (its collection, and what it shows, loosely: the shape
# only), English. With the collection query phrase they let hybrid search be measured (clip_search.demo.hybrid_eval).
_COLLECTION_NOTES: tuple[str, ...] = ("{shape} from the {collection} collection", "{collection} collection, item: {shape}", "a {shape} picture, catalogued in the {collection} collection")
COLLECTION_QUERIES: dict[str, str] = {"sentence": "{query} from the {collection} collection", "short": "{query}, {collection}"}


def collection_note(scene: Scene, variant: int = 0) -> str:
    """A catalogue note of a scene: its collection (a fact its pixels do not show) and its shape, in English."""
    shape = _EN_NOUN[scene.shape][1 if scene.count > 1 else 0]
    return _COLLECTION_NOTES[variant % len(_COLLECTION_NOTES)].format(shape=shape, collection=collection_of(scene))


def random_query(scene: Scene, rng: random.Random, full_prob: float = 0.5) -> Query:
    """A query the scene matches: all attributes with probability `full_prob`, else a subset naming shape or colour."""
    if rng.random() < full_prob:
        return Query.from_scene(scene)
    keys = [k for k in ATTRIBUTES if rng.random() < 0.5]
    if "shape" not in keys and "color" not in keys:
        keys.append(rng.choice(("shape", "color")))
    return Query.from_scene(scene, keys)


def caption(scene: Scene, lang: str, rng: random.Random) -> str:
    """A true caption of the scene in `lang`, with a random attribute subset and template."""
    query = random_query(scene, rng)
    return query_text(query, lang, rng.randrange(TEMPLATE_COUNT))


def parallel_pairs(
    scenes: list[Scene], langs: tuple[str, ...] | list[str], rng: random.Random
) -> list[tuple[str, str, str]]:
    """(english, lang, translation) for each scene and language: one query and template phrased on both sides."""
    for lang in langs:
        _check_lang(lang)
    pairs = []
    for scene in scenes:
        for lang in langs:
            query = random_query(scene, rng)
            t = rng.randrange(TEMPLATE_COUNT)
            pairs.append((query_text(query, "en", t), lang, query_text(query, lang, t)))
    return pairs


_LABEL_VALUES: dict[str, tuple] = {
    "shape": SHAPES, "color": COLORS, "size": SIZES, "count": COUNTS,
    "position": POSITIONS, "background": BACKGROUNDS,
}
_LABEL_WORDS: dict[str, dict[str, dict]] = {
    "en": {
        "shape": {s: s for s in SHAPES}, "color": {c: c for c in COLORS}, "size": {s: s for s in SIZES},
        "count": _EN_COUNT, "position": {p: p for p in POSITIONS}, "background": {b: b for b in BACKGROUNDS},
    },
    "de": {
        "shape": {s: _DE_NOUN[s][1] for s in SHAPES},
        "color": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "orange": "orange",
                  "purple": "violett", "white": "weiß", "black": "schwarz"},
        "size": {"small": "klein", "large": "groß"},
        "count": {1: "eins", 2: "zwei", 3: "drei"},
        "position": {"left": "links", "right": "rechts", "top": "oben", "bottom": "unten", "center": "Mitte"},
        "background": {"grey": "grau", "sand": "sandfarben", "turquoise": "türkis"},
    },
    "fr": {
        "shape": {s: _FR_NOUN[s][1] for s in SHAPES},
        "color": {c: _FR_ADJ[c][0] for c in COLORS},
        "size": {"small": "petit", "large": "grand"},
        "count": {1: "un", 2: "deux", 3: "trois"},
        "position": {"left": "gauche", "right": "droite", "top": "haut", "bottom": "bas", "center": "centre"},
        "background": {"grey": "gris", "sand": "sable", "turquoise": "turquoise"},
    },
    "es": {
        "shape": {s: _ES_NOUN[s][1] for s in SHAPES},
        "color": {c: _ES_ADJ[c][0] for c in COLORS},
        "size": {"small": "pequeño", "large": "grande"},
        "count": {1: "uno", 2: "dos", 3: "tres"},
        "position": {"left": "izquierda", "right": "derecha", "top": "arriba", "bottom": "abajo", "center": "centro"},
        "background": {"grey": "gris", "sand": "arena", "turquoise": "turquesa"},
    },
    "ru": {
        "shape": {s: _RU_NOUN[s][1] for s in SHAPES},
        "color": {c: _ru_adj(c, "nom_m") for c in COLORS},
        "size": {s: _ru_adj(s, "nom_m") for s in SIZES},
        "count": {1: "один", 2: "два", 3: "три"},
        "position": _RU_POS,
        "background": {"grey": "серый", "sand": "песочный", "turquoise": "бирюзовый"},
    },
    "zh": {
        "shape": {s: _ZH_NOUN[s][0] for s in SHAPES},
        "color": _ZH_COLOR,
        "size": {"small": "小", "large": "大"},
        "count": {1: "一", 2: "两", 3: "三"},
        "position": _ZH_POS,
        "background": {b: c + "背景" for b, c in _ZH_BG.items()},
    },
}


def label_values(kind: str) -> tuple:
    """The attribute values of `kind` ("shape", "color", ...), in the order `label_names` gives their words."""
    if kind not in _LABEL_VALUES:
        raise ValueError(f"unknown label kind {kind!r}; expected one of {', '.join(LABEL_KINDS)}")
    return _LABEL_VALUES[kind]


def label_names(kind: str, lang: str = "en") -> tuple[str, ...]:
    """The dictionary words for the values of `kind` in `lang`, for zero-shot labels ("circle", "red", ...)."""
    _check_lang(lang)
    return tuple(_LABEL_WORDS[lang][kind][v] for v in label_values(kind))


def label_prompts(kind: str, lang: str = "en", template_index: int = 0) -> tuple[str, ...]:
    """One sentence per value of `kind`, phrased as a one-attribute query ("a red shape", "a star")."""
    return tuple(query_text(Query(**{kind: v}), lang, template_index) for v in label_values(kind))


DEMO_EXAMPLE_QUERIES: tuple[Query, ...] = (
    Query(shape="star", color="red"),
    Query(shape="circle", color="blue", size="large"),
    Query(shape="heart", count=2),
    Query(shape="triangle", color="yellow"),
    Query(color="green", shape="square", count=3),
    Query(shape="heart", color="purple"),
)


def demo_examples(per_language: int = 3) -> list[tuple[str, str]]:
    """Example prompts for the demo app as (language, text): `per_language` example queries in every language,
    each language starting at a different query so that together they cover them all."""
    count = len(DEMO_EXAMPLE_QUERIES)
    return [
        (lang, query_text(DEMO_EXAMPLE_QUERIES[(i + j) % count], lang))
        for i, lang in enumerate(LANGUAGES)
        for j in range(per_language)
    ]
