"""Tests of the demo world's scene generator, renderer and multilingual captions."""

from __future__ import annotations

import io
import itertools
import math
import random
from collections import deque

import numpy as np
import pytest

from clip_search.demo.captions import (
    LANGUAGES,
    TEMPLATE_COUNT,
    caption,
    full_caption,
    label_names,
    label_prompts,
    label_values,
    parallel_pairs,
    query_text,
    random_query,
)
from clip_search.demo.scenes import (
    ATTRIBUTES,
    BACKGROUND_RGB,
    BACKGROUNDS,
    COLOR_RGB,
    COLORS,
    COUNTS,
    POSITIONS,
    SHAPES,
    SIZES,
    Query,
    Scene,
    SceneObject,
    generate_scene,
    generate_scenes,
    layout,
    render,
    truth_matrix,
)

ALL_VALUES = {
    "shape": SHAPES, "color": COLORS, "size": SIZES, "count": COUNTS, "position": POSITIONS, "background": BACKGROUNDS,
}


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def all_combinations(jitter_seed: int = 0):
    for combo in itertools.product(SHAPES, COLORS, SIZES, COUNTS, POSITIONS, BACKGROUNDS):
        yield Scene.make(*combo, jitter_seed=jitter_seed)


# ----------------------------------------------------------------------------------------- generation


def test_same_seed_same_scenes_and_pixels():
    a, b = generate_scenes(40, seed=7), generate_scenes(40, seed=7)
    assert a == b
    for s, t in zip(a[:8], b[:8]):
        assert png_bytes(render(s)) == png_bytes(render(t))


def test_different_seed_different_scenes():
    assert generate_scenes(40, seed=7) != generate_scenes(40, seed=8)


def test_seed_is_pinned_across_machines():
    # random.Random is specified to give the same stream everywhere; this pins our use of it.
    got = [(s.attributes(), s.jitter_seed) for s in generate_scenes(3, seed=0)]
    star, triangle = "star", "triangle"
    assert got == [
        ({"shape": star, "color": "white", "size": "small", "count": 2, "position": "center", "background": "sand"},
         869589436),
        ({"shape": triangle, "color": "black", "size": "large", "count": 3, "position": "right",
          "background": "turquoise"}, 299088013),
        ({"shape": triangle, "color": "blue", "size": "small", "count": 3, "position": "top",
          "background": "turquoise"}, 2110515738),
    ]


def test_generate_scene_uses_only_the_given_rng():
    r1, r2 = random.Random(3), random.Random(3)
    random.seed(123)  # the global generator must not matter
    s1 = generate_scene(r1)
    random.seed(456)
    assert generate_scene(r2) == s1


def test_jitter_seed_changes_pixels_not_attributes():
    s1 = Scene.make("star", "red", "large", 2, "left", "grey", jitter_seed=1)
    s2 = Scene.make("star", "red", "large", 2, "left", "grey", jitter_seed=2)
    assert s1.attributes() == s2.attributes()
    assert png_bytes(render(s1)) != png_bytes(render(s2))


def test_every_attribute_value_occurs():
    scenes = generate_scenes(500, seed=11)
    for name, values in ALL_VALUES.items():
        seen = {s.attributes()[name] for s in scenes}
        assert seen == set(values), name


def test_scene_validation():
    with pytest.raises(ValueError):
        Scene.make("hexagon", "red", "small", 1, "left", "grey")
    with pytest.raises(ValueError):
        Scene.make("star", "red", "small", 4, "left", "grey")
    with pytest.raises(ValueError):
        Scene("grey", (SceneObject("star", "red", "small", "left"), SceneObject("star", "blue", "small", "left")))
    with pytest.raises(ValueError):
        Scene("grey", ())
    with pytest.raises(ValueError):
        Query(color="pink")


def test_colours_stand_out_from_every_background():
    for c, b in itertools.product(COLOR_RGB.values(), BACKGROUND_RGB.values()):
        assert math.dist(c, b) > 100
    for b1, b2 in itertools.combinations(BACKGROUND_RGB.values(), 2):
        assert math.dist(b1, b2) > 100


# ----------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("size", [64, 96])
def test_render_size_and_mode(size):
    image = render(generate_scenes(1, seed=1)[0], size=size)
    assert image.mode == "RGB"
    assert image.size == (size, size)


def test_layout_inside_canvas_and_apart():
    for position, count, size, seed in itertools.product(POSITIONS, COUNTS, SIZES, range(150)):
        scene = Scene.make("star", "red", size, count, position, "grey", jitter_seed=seed)
        placements = layout(scene)
        assert len(placements) == count
        for p in placements:
            assert p.radius <= p.x <= 1 - p.radius and p.radius <= p.y <= 1 - p.radius
        for p, q in itertools.combinations(placements, 2):
            assert math.hypot(p.x - q.x, p.y - q.y) > p.radius + q.radius


def test_layout_regions():
    for count, seed in itertools.product(COUNTS, range(20)):
        def centre(position):
            ps = layout(Scene.make("circle", "red", "small", count, position, "grey", jitter_seed=seed))
            return sum(p.x for p in ps) / count, sum(p.y for p in ps) / count

        assert centre("left")[0] < 0.3 and centre("right")[0] > 0.7
        assert centre("top")[1] < 0.3 and centre("bottom")[1] > 0.7
        cx, cy = centre("center")
        assert 0.4 < cx < 0.6 and 0.4 < cy < 0.6
    small = layout(Scene.make("circle", "red", "small", 1, "left", "grey", jitter_seed=3))[0]
    large = layout(Scene.make("circle", "red", "large", 1, "left", "grey", jitter_seed=3))[0]
    assert large.radius > 1.4 * small.radius


def blobs(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a boolean mask."""
    seen = np.zeros_like(mask)
    out = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        comp, todo = [], deque([(y0, x0)])
        while todo:
            y, x = todo.popleft()
            comp.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
        out.append(comp)
    return out


def test_rendered_pixels_show_the_scene():
    # the rendered image has `count` separate blobs of the object colour, in the right region
    rng = random.Random(5)
    for _ in range(40):
        scene = generate_scene(rng)
        pixels = np.asarray(render(scene), dtype=np.int32)
        target = np.array(COLOR_RGB[scene.color])
        mask = np.abs(pixels - target).max(axis=2) < 40
        found = [b for b in blobs(mask) if len(b) >= 8]
        assert len(found) == scene.count, scene
        xs = np.mean([x for b in found for _, x in b]) / 64
        ys = np.mean([y for b in found for y, _ in b]) / 64
        region = {"left": xs < 0.3, "right": xs > 0.7, "top": ys < 0.3, "bottom": ys > 0.7,
                  "center": 0.35 < xs < 0.65 and 0.35 < ys < 0.65}
        assert region[scene.position], scene
        corner = pixels[0, 0]
        assert np.abs(corner - np.array(BACKGROUND_RGB[scene.background])).max() <= 8


# ----------------------------------------------------------------------------------------- matching


def test_matches():
    scene = Scene.make("star", "red", "small", 3, "left", "sand")
    assert scene.matches(Query())
    assert scene.matches(Query(shape="star", color="red"))
    assert scene.matches(Query(shape="star", color="red", size="small", count=3, position="left", background="sand"))
    assert scene.matches(Query(count=3))
    assert not scene.matches(Query(shape="star", color="blue"))
    assert not scene.matches(Query(shape="circle"))
    assert not scene.matches(Query(count=1))
    assert not scene.matches(Query(size="large"))
    assert not scene.matches(Query(position="right", shape="star"))
    assert not scene.matches(Query(background="grey"))
    assert scene.matches(Query.from_scene(scene))
    assert Query.from_scene(scene, ["shape", "count"]) == Query(shape="star", count=3)
    assert scene.attributes() == {
        "shape": "star", "color": "red", "size": "small", "count": 3, "position": "left", "background": "sand",
    }
    assert Query(color="red", count=2).attributes() == {"color": "red", "count": 2}


def test_matches_agrees_with_brute_force():
    scenes = generate_scenes(300, seed=2)
    rng = random.Random(0)
    for _ in range(50):
        constraints = {k: rng.choice(v) for k, v in ALL_VALUES.items() if rng.random() < 0.5}
        q = Query(**constraints)
        got = [s.matches(q) for s in scenes]
        want = [all(s.attributes()[k] == v for k, v in constraints.items()) for s in scenes]
        assert got == want


def test_truth_matrix_is_matches_for_every_pair():
    scenes = generate_scenes(200, seed=3)
    rng = random.Random(1)
    queries = [Query()] + [Query(**{k: rng.choice(v) for k, v in ALL_VALUES.items() if rng.random() < 0.4}) for _ in range(60)]
    truth = truth_matrix(queries, scenes)
    assert truth.shape == (61, 200) and truth.dtype == bool
    assert truth.tolist() == [[s.matches(q) for s in scenes] for q in queries]
    assert truth[0].all() and 0 < truth[1:].sum() < truth[1:].size


# ----------------------------------------------------------------------------------------- captions

S_STARS = Scene.make("star", "red", "small", 3, "left", "sand")  # feminine in fr/es/ru, masculine in de
S_CIRCLE = Scene.make("circle", "orange", "large", 1, "center", "grey")  # masculine
S_HEARTS = Scene.make("heart", "white", "small", 2, "top", "turquoise")  # neuter in de/ru
S_TRIANGLE = Scene.make("triangle", "purple", "large", 1, "bottom", "grey")  # neuter in de
S_STAR_ONE = Scene.make("star", "blue", "large", 1, "right", "turquoise")
S_SQUARES = Scene.make("square", "green", "small", 3, "right", "grey")

FULL = {
    "en": {
        S_STARS: "three small red stars on the left, on a sand background",
        S_CIRCLE: "one large orange circle in the center, on a grey background",
        S_HEARTS: "two small white hearts at the top, on a turquoise background",
        S_TRIANGLE: "one large purple triangle at the bottom, on a grey background",
        S_STAR_ONE: "one large blue star on the right, on a turquoise background",
        S_SQUARES: "three small green squares on the right, on a grey background",
    },
    "de": {
        S_STARS: "drei kleine rote Sterne links auf sandfarbenem Hintergrund",
        S_CIRCLE: "ein einzelner großer orangefarbener Kreis in der Mitte auf grauem Hintergrund",
        S_HEARTS: "zwei kleine weiße Herzen oben auf türkisfarbenem Hintergrund",
        S_TRIANGLE: "ein einzelnes großes violettes Dreieck unten auf grauem Hintergrund",
        S_STAR_ONE: "ein einzelner großer blauer Stern rechts auf türkisfarbenem Hintergrund",
        S_SQUARES: "drei kleine grüne Quadrate rechts auf grauem Hintergrund",
    },
    "fr": {
        S_STARS: "trois petites étoiles rouges à gauche sur fond sable",
        S_CIRCLE: "un seul grand cercle orange au centre sur fond gris",
        S_HEARTS: "deux petits cœurs blancs en haut sur fond turquoise",
        S_TRIANGLE: "un seul grand triangle violet en bas sur fond gris",
        S_STAR_ONE: "une seule grande étoile bleue à droite sur fond turquoise",
        S_SQUARES: "trois petits carrés verts à droite sur fond gris",
    },
    "es": {
        S_STARS: "tres estrellas rojas pequeñas a la izquierda sobre fondo arena",
        S_CIRCLE: "un solo círculo naranja grande en el centro sobre fondo gris",
        S_HEARTS: "dos corazones blancos pequeños arriba sobre fondo turquesa",
        S_TRIANGLE: "un solo triángulo morado grande abajo sobre fondo gris",
        S_STAR_ONE: "una sola estrella azul grande a la derecha sobre fondo turquesa",
        S_SQUARES: "tres cuadrados verdes pequeños a la derecha sobre fondo gris",
    },
    "ru": {
        S_STARS: "три маленькие красные звезды слева на песочном фоне",
        S_CIRCLE: "один большой оранжевый круг в центре на сером фоне",
        S_HEARTS: "два маленьких белых сердца сверху на бирюзовом фоне",
        S_TRIANGLE: "один большой фиолетовый треугольник снизу на сером фоне",
        S_STAR_ONE: "одна большая синяя звезда справа на бирюзовом фоне",
        S_SQUARES: "три маленьких зелёных квадрата справа на сером фоне",
    },
    "zh": {
        S_STARS: "沙色背景的左边有三颗红色的小星星",
        S_CIRCLE: "灰色背景的中间有一个橙色的大圆形",
        S_HEARTS: "青色背景的上方有两个白色的小爱心",
        S_TRIANGLE: "灰色背景的下方有一个紫色的大三角形",
        S_STAR_ONE: "青色背景的右边有一颗蓝色的大星星",
        S_SQUARES: "灰色背景的右边有三个绿色的小正方形",
    },
}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_full_captions(lang):
    for scene, want in FULL[lang].items():
        assert full_caption(scene, lang) == want


OTHER_TEMPLATES = [
    (S_STARS, "en", 1, "a picture of three small red stars on the left, on a sand background"),
    (S_CIRCLE, "en", 2, "there is one large orange circle in the center, on a grey background"),
    (S_STARS, "de", 1, "ein Bild mit drei kleinen roten Sternen links auf sandfarbenem Hintergrund"),
    (S_CIRCLE, "de", 1, "ein Bild mit einem einzelnen großen orangefarbenen Kreis in der Mitte auf grauem Hintergrund"),
    (S_CIRCLE, "de", 2, "es gibt einen einzelnen großen orangefarbenen Kreis in der Mitte auf grauem Hintergrund"),
    (S_TRIANGLE, "de", 1, "ein Bild mit einem einzelnen großen violetten Dreieck unten auf grauem Hintergrund"),
    (S_HEARTS, "de", 1, "ein Bild mit zwei kleinen weißen Herzen oben auf türkisfarbenem Hintergrund"),
    (S_CIRCLE, "fr", 1, "une image d'un seul grand cercle orange au centre sur fond gris"),
    (S_STARS, "fr", 2, "il y a trois petites étoiles rouges à gauche sur fond sable"),
    (S_STAR_ONE, "es", 1, "una imagen de una sola estrella azul grande a la derecha sobre fondo turquesa"),
    (S_STARS, "ru", 1, "изображение с тремя маленькими красными звёздами слева на песочном фоне"),
    (S_CIRCLE, "ru", 1, "изображение с одним большим оранжевым кругом в центре на сером фоне"),
    (S_STAR_ONE, "ru", 1, "изображение с одной большой синей звездой справа на бирюзовом фоне"),
    (S_HEARTS, "ru", 2, "на картинке два маленьких белых сердца сверху на бирюзовом фоне"),
    (S_STARS, "zh", 1, "三颗红色的小星星，位于左边，背景为沙色"),
    (S_STARS, "zh", 2, "图片里有三颗红色的小星星，在左边，背景是沙色的"),
]


def test_full_captions_other_templates():
    for scene, lang, template, want in OTHER_TEMPLATES:
        assert full_caption(scene, lang, template) == want


# query_text for counts None/1/2/3 in every language; each row: (shape, color, size) then the four phrasings
COUNT_CASES = {
    "en": [
        (("star", "red", None), ["a red star", "one red star", "two red stars", "three red stars"]),
        (("circle", "orange", "large"), ["a large orange circle", "one large orange circle",
                                         "two large orange circles", "three large orange circles"]),
        ((None, "blue", None), ["a blue shape", "one blue shape", "two blue shapes", "three blue shapes"]),
    ],
    "de": [
        (("circle", "red", "small"), ["ein kleiner roter Kreis", "ein einzelner kleiner roter Kreis",
                                      "zwei kleine rote Kreise", "drei kleine rote Kreise"]),
        (("heart", "yellow", None), ["ein gelbes Herz", "ein einzelnes gelbes Herz",
                                     "zwei gelbe Herzen", "drei gelbe Herzen"]),
        ((None, "black", "large"), ["eine große schwarze Form", "eine einzelne große schwarze Form",
                                    "zwei große schwarze Formen", "drei große schwarze Formen"]),
    ],
    "fr": [
        (("circle", "red", "small"), ["un petit cercle rouge", "un seul petit cercle rouge",
                                      "deux petits cercles rouges", "trois petits cercles rouges"]),
        (("star", "white", "large"), ["une grande étoile blanche", "une seule grande étoile blanche",
                                      "deux grandes étoiles blanches", "trois grandes étoiles blanches"]),
        (("star", "orange", None), ["une étoile orange", "une seule étoile orange",
                                    "deux étoiles orange", "trois étoiles orange"]),
    ],
    "es": [
        (("star", "red", "small"), ["una estrella roja pequeña", "una sola estrella roja pequeña",
                                    "dos estrellas rojas pequeñas", "tres estrellas rojas pequeñas"]),
        (("heart", "blue", "large"), ["un corazón azul grande", "un solo corazón azul grande",
                                      "dos corazones azules grandes", "tres corazones azules grandes"]),
        (("square", "yellow", None), ["un cuadrado amarillo", "un solo cuadrado amarillo",
                                      "dos cuadrados amarillos", "tres cuadrados amarillos"]),
    ],
    "ru": [
        (("circle", "red", None), ["красный круг", "один красный круг", "два красных круга", "три красных круга"]),
        (("star", "red", "small"), ["маленькая красная звезда", "одна маленькая красная звезда",
                                    "две маленькие красные звезды", "три маленькие красные звезды"]),
        (("heart", "blue", "large"), ["большое синее сердце", "одно большое синее сердце",
                                      "два больших синих сердца", "три больших синих сердца"]),
        ((None, "yellow", None), ["жёлтая фигура", "одна жёлтая фигура", "две жёлтые фигуры", "три жёлтые фигуры"]),
    ],
    "zh": [
        (("circle", "red", None), ["红色的圆形", "一个红色的圆形", "两个红色的圆形", "三个红色的圆形"]),
        (("star", "red", "small"), ["红色的小星星", "一颗红色的小星星", "两颗红色的小星星", "三颗红色的小星星"]),
        (("heart", None, "large"), ["大爱心", "一个大爱心", "两个大爱心", "三个大爱心"]),
    ],
}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_query_text_counts(lang):
    for (shape, color, size), wants in COUNT_CASES[lang]:
        for count, want in zip((None, 1, 2, 3), wants):
            q = Query(shape=shape, color=color, size=size, count=count)
            template = 1 if lang == "zh" else 0  # zh template 1 is the bare noun phrase
            assert query_text(q, lang, template) == want


def test_query_text_cases_and_places():
    assert query_text(Query(shape="star", position="left"), "en") == "a star on the left"
    assert query_text(Query(shape="star", background="grey"), "en") == "a star on a grey background"
    assert query_text(Query(color="orange"), "en") == "an orange shape"
    assert query_text(Query(shape="circle", color="red"), "de", 2) == "es gibt einen roten Kreis"
    assert query_text(Query(shape="heart", count=1), "de", 1) == "ein Bild mit einem einzelnen Herzen"
    assert query_text(Query(color="green", count=1), "de", 1) == "ein Bild mit einer einzelnen grünen Form"
    assert query_text(Query(shape="square", count=3, position="top"), "de", 1) == "ein Bild mit drei Quadraten oben"
    assert query_text(Query(shape="star"), "fr", 1) == "une image d'une étoile"
    assert query_text(Query(shape="star", count=2), "fr", 1) == "une image de deux étoiles"
    assert query_text(Query(shape="circle", position="center"), "es", 2) == "hay un círculo en el centro"
    assert query_text(Query(shape="star"), "ru", 1) == "изображение со звездой"
    assert query_text(Query(shape="heart"), "ru", 1) == "изображение с сердцем"
    assert query_text(Query(shape="star", count=2), "ru", 1) == "изображение с двумя звёздами"
    assert query_text(Query(shape="star", color="red", count=2, position="bottom"), "ru") == "две красные звезды снизу"
    assert query_text(Query(shape="star", position="left"), "zh") == "左边有星星"
    assert query_text(Query(shape="star", background="grey"), "zh") == "灰色背景上有星星"
    with pytest.raises(ValueError):
        query_text(Query(shape="star"), "it")
    with pytest.raises(ValueError):
        query_text(Query(shape="star"), "en", TEMPLATE_COUNT)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_phrasings_of_one_scene_are_distinct(lang):
    # every attribute subset x template says something different
    texts = [
        query_text(Query.from_scene(S_STARS, keys), lang, t)
        for r in range(len(ATTRIBUTES) + 1)
        for keys in itertools.combinations(ATTRIBUTES, r)
        for t in range(TEMPLATE_COUNT)
    ]
    assert len(set(texts)) == len(texts)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_full_caption_determines_the_scene(lang):
    # no two attribute combinations share a full caption
    captions = [full_caption(s, lang) for s in all_combinations()]
    assert len(set(captions)) == len(captions) == 3600


def test_caption_is_a_true_phrasing():
    rng = random.Random(4)
    for scene in generate_scenes(30, seed=3):
        truths = {
            lang: {
                query_text(Query.from_scene(scene, keys), lang, t)
                for r in range(len(ATTRIBUTES) + 1)
                for keys in itertools.combinations(ATTRIBUTES, r)
                for t in range(TEMPLATE_COUNT)
            }
            for lang in LANGUAGES
        }
        for lang in LANGUAGES:
            assert caption(scene, lang, rng) in truths[lang]


def test_captions_vary():
    rng = random.Random(0)
    texts = {caption(S_STARS, "en", rng) for _ in range(200)}
    assert len(texts) > 20
    assert full_caption(S_STARS, "en") in texts  # full captions are common
    assert any("star" in t and "small" not in t for t in texts)  # and so are shorter ones


def test_random_query_always_matches_and_names_shape_or_colour():
    rng = random.Random(1)
    for scene in generate_scenes(100, seed=9):
        q = random_query(scene, rng)
        assert scene.matches(q)
        assert q.shape is not None or q.color is not None


def test_parallel_pairs_align():
    scenes = generate_scenes(20, seed=5)
    langs = ("de", "fr", "ru", "zh", "en")
    pairs = parallel_pairs(scenes, langs, random.Random(42))
    assert len(pairs) == len(scenes) * len(langs)
    replay = random.Random(42)
    i = 0
    for scene in scenes:
        for lang in langs:
            q = random_query(scene, replay)
            t = replay.randrange(TEMPLATE_COUNT)
            assert pairs[i] == (query_text(q, "en", t), lang, query_text(q, lang, t))
            i += 1
    for english, lang, text in pairs:
        if lang == "en":
            assert english == text
    assert parallel_pairs(scenes, langs, random.Random(42)) == pairs


def test_parallel_pairs_say_the_same_count():
    numerals = {"de": (("zwei",), ("drei",)), "fr": (("deux",), ("trois",)), "es": (("dos",), ("tres",)),
                "ru": (("два", "две", "двумя"), ("три", "тремя")), "zh": (("两个", "两颗"), ("三个", "三颗"))}
    pairs = parallel_pairs(generate_scenes(60, seed=6), tuple(numerals), random.Random(0))
    for english, lang, text in pairs:
        words = set(english.split())
        for en_word, forms in zip(("two", "three"), numerals[lang]):
            if lang == "zh":
                said = any(f in text for f in forms)
            else:
                said = bool(set(forms) & set(text.split()))
            assert (en_word in words) == said, (english, text)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_label_names(lang):
    for kind in ATTRIBUTES:
        names = label_names(kind, lang)
        assert len(names) == len(label_values(kind)) == len(set(names))
        prompts = label_prompts(kind, lang)
        assert len(set(prompts)) == len(prompts)
    with pytest.raises(ValueError):
        label_names("texture", lang)


def test_label_names_english():
    assert label_names("shape") == ("circle", "square", "triangle", "star", "heart")
    assert label_names("color") == ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
    assert label_names("shape", "de") == ("Kreis", "Quadrat", "Dreieck", "Stern", "Herz")
    assert label_prompts("shape") == ("a circle", "a square", "a triangle", "a star", "a heart")
    assert label_prompts("color")[4] == "an orange shape"
