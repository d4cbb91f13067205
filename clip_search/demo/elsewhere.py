"""Sentences about things no demo scene contains, in every demo language: what the demo models learn matches no image.

A real CLIP has seen the world and places "an elephant in a garden" far from a picture of a star. The demo CLIP
has seen only shapes, and without these it would place any text among the shape captions. So training adds
sentences about animals, vehicles, people, food, objects and places as texts with no true image
(`clip_search.demo.train`), and the student's distillation data pairs their English with translations
(`parallel_elsewhere`), so that every language learns the same.

Their words are kept apart from `clip_search.demo.evaluate.OUT_OF_WORLD_QUERIES` (tests/test_demo_training.py
checks it): the only words the two share are words of the shape captions themselves ("a", "on", "two", "red"),
so eval's out-of-world figure measures what the models do with things they have never read about.
"""

from __future__ import annotations

import random

from clip_search.demo.captions import LANGUAGES

# Each entry says the same thing in en, de, fr, es, ru, zh (in LANGUAGES order).
SUBJECTS: tuple[tuple[str, ...], ...] = (
    ("an elephant", "ein Elefant", "un éléphant", "un elefante", "слон", "大象"),
    ("a lion", "ein Löwe", "un lion", "un león", "лев", "狮子"),
    ("a rabbit", "ein Kaninchen", "un lapin", "un conejo", "кролик", "兔子"),
    ("a cow", "eine Kuh", "une vache", "una vaca", "корова", "奶牛"),
    ("a duck", "eine Ente", "un canard", "un pato", "утка", "鸭子"),
    ("a monkey", "ein Affe", "un singe", "un mono", "обезьяна", "猴子"),
    ("a bear", "ein Bär", "un ours", "un oso", "медведь", "熊"),
    ("a parrot", "ein Papagei", "un perroquet", "un loro", "попугай", "鹦鹉"),
    ("a fish", "ein Fisch", "un poisson", "un pez", "рыба", "鱼"),
    ("a sheep", "ein Schaf", "un mouton", "una oveja", "овца", "绵羊"),
    ("a bus", "ein Bus", "un bus", "un autobús", "автобус", "公交车"),
    ("a boat", "ein Boot", "un bateau", "un barco", "лодка", "小船"),
    ("a truck", "ein Lastwagen", "un camion", "un camión", "грузовик", "卡车"),
    ("a motorbike", "ein Motorrad", "une moto", "una moto", "мотоцикл", "摩托车"),
    ("a tractor", "ein Traktor", "un tracteur", "un tractor", "трактор", "拖拉机"),
    ("a helicopter", "ein Hubschrauber", "un hélicoptère", "un helicóptero", "вертолёт", "直升机"),
    ("a woman", "eine Frau", "une femme", "una mujer", "женщина", "女人"),
    ("a man", "ein Mann", "un homme", "un hombre", "мужчина", "男人"),
    ("a child", "ein Kind", "un enfant", "un niño", "ребёнок", "孩子"),
    ("a family", "eine Familie", "une famille", "una familia", "семья", "一家人"),
    ("a football player", "ein Fußballspieler", "un footballeur", "un futbolista", "футболист", "足球运动员"),
    ("a pizza", "eine Pizza", "une pizza", "una pizza", "пицца", "披萨"),
    ("a cup of coffee", "eine Tasse Kaffee", "une tasse de café", "una taza de café", "чашка кофе", "一杯咖啡"),
    ("a bowl of soup", "eine Schüssel Suppe", "un bol de soupe", "un plato de sopa", "тарелка супа", "一碗汤"),
    ("an apple", "ein Apfel", "une pomme", "una manzana", "яблоко", "苹果"),
    ("a cake", "ein Kuchen", "un gâteau", "un pastel", "торт", "蛋糕"),
    ("a sandwich", "ein Sandwich", "un sandwich", "un bocadillo", "бутерброд", "三明治"),
    ("a guitar", "eine Gitarre", "une guitare", "una guitarra", "гитара", "吉他"),
    ("a laptop", "ein Laptop", "un ordinateur portable", "un portátil", "ноутбук", "笔记本电脑"),
    ("a book", "ein Buch", "un livre", "un libro", "книга", "书"),
    ("an umbrella", "ein Regenschirm", "un parapluie", "un paraguas", "зонт", "雨伞"),
    ("a chair", "ein Stuhl", "une chaise", "una silla", "стул", "椅子"),
    ("a clock", "eine Uhr", "une horloge", "un reloj", "часы", "时钟"),
    ("a bridge", "eine Brücke", "un pont", "un puente", "мост", "桥"),
    ("a church", "eine Kirche", "une église", "una iglesia", "церковь", "教堂"),
    ("a waterfall", "ein Wasserfall", "une cascade", "una cascada", "водопад", "瀑布"),
    ("a forest", "ein Wald", "une forêt", "un bosque", "лес", "森林"),
    ("a desert", "eine Wüste", "un désert", "un desierto", "пустыня", "沙漠"),
    ("a river", "ein Fluss", "une rivière", "un río", "река", "河流"),
    ("a castle", "eine Burg", "un château", "un castillo", "замок", "城堡"),
    ("a market", "ein Markt", "un marché", "un mercado", "рынок", "市场"),
    ("a kitchen", "eine Küche", "une cuisine", "una cocina", "кухня", "厨房"),
)

# Where a subject is: appended to it ("an elephant in a garden"; zh "大象在花园里").
PLACES: tuple[tuple[str, ...], ...] = (
    ("in a garden", "in einem Garten", "au jardin", "en un jardín", "в саду", "花园里"),
    ("in the rain", "in strömendem Regen", "sous une averse", "bajo la lluvia", "под дождём", "雨中"),
    ("in a park", "in einem Park", "au parc", "en un parque", "в парке", "公园里"),
    ("near a lake", "neben einem See", "près d'un lac", "cerca de un lago", "возле озера", "湖边"),
    ("in a village", "in einem Dorf", "au village", "en un pueblo", "в деревне", "村子里"),
    ("in the woods", "in einem Wald", "en forêt", "en el bosque", "в лесу", "树林里"),
    ("on a table", "auf einem Tisch", "sur une table", "sobre una mesa", "на столе", "桌子上"),
    ("at dawn", "in der Morgendämmerung", "à l'aube", "de madrugada", "на рассвете", "黎明时"),
    ("in a room", "in einem Zimmer", "en intérieur", "en una habitación", "в комнате", "房间里"),
    ("on a road", "auf einer Landstraße", "sur une route", "en una carretera", "на дороге", "公路上"),
    ("at the zoo", "in einem Zoo", "au zoo", "en el zoo", "в зоопарке", "动物园里"),
    ("in winter", "zur Winterzeit", "en hiver", "en invierno", "зимой", "冬天"),
    ("at a market", "auf einem Markt", "au marché", "en un mercado", "на рынке", "集市上"),
)

# Subjects with a colour or a count of the shape world, written out (agreement differs in every language).
COLOURED_SUBJECTS: tuple[tuple[str, ...], ...] = (
    ("a yellow bus", "ein gelber Bus", "un bus jaune", "un autobús amarillo", "жёлтый автобус", "黄色的公交车"),
    ("a white sheep", "ein weißes Schaf", "un mouton blanc", "una oveja blanca", "белая овца", "白色的绵羊"),
    ("a black bear", "ein schwarzer Bär", "un ours noir", "un oso negro", "чёрный медведь", "黑色的熊"),
    ("a green apple", "ein grüner Apfel", "une pomme verte", "una manzana verde", "зелёное яблоко", "绿色的苹果"),
    ("a blue boat", "ein blaues Boot", "un bateau bleu", "un barco azul", "синяя лодка", "蓝色的小船"),
    ("a red umbrella", "ein roter Regenschirm", "un parapluie rouge", "un paraguas rojo", "красный зонт", "红色的雨伞"),
    ("an orange tractor", "ein orangefarbener Traktor", "un tracteur orange", "un tractor naranja", "оранжевый трактор", "橙色的拖拉机"),
    ("a purple guitar", "eine violette Gitarre", "une guitare violette", "una guitarra morada", "фиолетовая гитара", "紫色的吉他"),
    ("two elephants", "zwei Elefanten", "deux éléphants", "dos elefantes", "два слона", "两头大象"),
    ("three ducks", "drei Enten", "trois canards", "tres patos", "три утки", "三只鸭子"),
    ("two children", "zwei Kinder", "deux enfants", "dos niños", "двое детей", "两个孩子"),
    ("three apples", "drei Äpfel", "trois pommes", "tres manzanas", "три яблока", "三个苹果"),
    ("a small monkey", "ein kleiner Affe", "un petit singe", "un mono pequeño", "маленькая обезьяна", "小猴子"),
    ("a large truck", "ein großer Lastwagen", "un grand camion", "un camión grande", "большой грузовик", "大卡车"),
)

# English-only framings for the CLIP's training sentences (the student learns the bare phrases in every language).
ENGLISH_FRAMES: tuple[str, ...] = ("{}", "a picture of {}", "a photo of {}", "there is {}", "{}, close up")


def _column(lang: str) -> int:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; expected one of {', '.join(LANGUAGES)}")
    return LANGUAGES.index(lang)


def _phrase(subject: tuple[str, ...], place: tuple[str, ...] | None, lang: str) -> str:
    col = _column(lang)
    if place is None:
        return subject[col]
    if lang == "zh":
        return f"{subject[col]}在{place[col]}"
    return f"{subject[col]} {place[col]}"


def elsewhere_phrases(lang: str) -> list[str]:
    """Every out-of-world phrase in `lang`: each subject alone and in each place, in a fixed order."""
    subjects = SUBJECTS + COLOURED_SUBJECTS
    return [_phrase(s, p, lang) for s in subjects for p in (None, *PLACES)]


def elsewhere_sentences() -> list[str]:
    """Every English out-of-world sentence the demo CLIP trains on: each phrase in each English frame."""
    return [frame.format(phrase) for phrase in elsewhere_phrases("en") for frame in ENGLISH_FRAMES]


def parallel_elsewhere(langs: tuple[str, ...] | list[str], rng: random.Random, share: float = 0.5) -> list[tuple[str, str, str]]:
    """(english, lang, translation) for a random `share` of the out-of-world phrases in each language, English
    paired with itself too: the student's distillation data for texts that match no image."""
    english = elsewhere_phrases("en")
    pairs = []
    for lang in langs:
        translated = elsewhere_phrases(lang)
        chosen = sorted(rng.sample(range(len(english)), round(share * len(english))))
        pairs += [(english[i], lang, translated[i]) for i in chosen]
    return pairs
