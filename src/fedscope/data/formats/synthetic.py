"""The generated cross-domain data set ``synthetic``: fedscope's embedded default.

It needs no files, generates in about a second, trains in seconds, and is built so
that what FedSCOPE exploits carries real, measurable signal: the other domain's
history, the order of a sequence, and the item text (bench/synthetic_testbed.py
measures each). It is a pure function of its options: the same options give
byte-identical arrays, another ``seed`` gives other data. Defaults are in
:data:`DEFAULTS`; every option below is one of them.

Generative process
------------------
**Topics.** ``n_topics`` (default and maximum 16) lifestyle themes shared by every
domain: Italian, Japanese, Mexican, French, Indian, Baking & Desserts, Coffee & Tea,
Barbecue & Grilling, Healthy & Vegan, Kids & Family, Holiday & Christmas,
Outdoors & Camping, Seafood & Coastal, Wine & Cocktails, Southern & Country,
Fitness & Sports. Each has a vocabulary (adjectives such as "Tuscan", nouns such as
"Trattoria", groceries such as "Basil Pesto", kitchenware such as "Pasta Maker"), a
base popularity (Dirichlet(4)), an age group it leans to, and two or three related
topics.

**Domains and items.** ``domains`` names two or more of Books, Movies, Food, Kitchen,
Music (default Books and Movies), each with ``n_items`` items (default 2,000). Every
item has one topic (topic sizes Dirichlet(8), each topic at least one item per
domain) and a long-tail popularity weight ``1 / rank**zipf`` (default 0.9) from a
random rank. Books, Movies and Music group 25% / 15% / 10% of each topic's items into
series of 2-4 parts that are consumed in order. Across each pair of domains, a
share ``companion_share`` (0.15) of the standalone items of each topic is paired
with a counterpart of the same topic in the other domain: a film and the novel it
is based on (same title), a film and its soundtrack ("<title> (Original
Soundtrack)"), or, for other pairs, items that go together (linked by behaviour
only).

**Item text.** ``title`` is an English-looking title from the item's topic
vocabulary and its domain's templates ("The Tuscan Trattoria Companion", "Tuscan
Nights", "Harvest Lane Tuscan Basil Pesto, 8 oz", "ChefLine Pasta Maker, Stainless
Steel"); parts of a series add ", Book 2", " 2" or ", Vol. II". ``category`` is
"<domain root> > <topic label>" ("Movies & TV > Italian"). So items of one topic
share words across domains. With probability ``text_noise`` (0.1) a title is
written from another, random topic's vocabulary (the category stays right); with
probability ``missing_text`` (0.1) the title is missing (""), and, independently,
with half that probability the category. ``year`` (Books, Movies, Music; missing
for 5%; rising along a series) and ``brand`` (Food, Kitchen) are filled where they
make sense, else "".

**Users.** ``n_users`` users (default 4,000). A user has one taste over topics,
Dirichlet(``taste_concentration`` (0.2) * K * base popularity), shared by all
domains: the taste used in domain d is ``taste_sharing`` (0.8) * shared + the rest
* a draw of the user's own for d. A share ``overlap`` (0.6) of users is active in
two or more domains (all of them when there are two), each with its own domain
shares (Dirichlet(``domain_concentration`` = 2)); the others in one domain. A share
``cold_start`` (0.3) has 2-5 interactions (length-2 users cannot be split and stay
training-only); the others 6 + a geometric number, mean ``mean_length`` (12),
capped at ``max_length`` (50); a user has at least one interaction per active
domain. ``age_range`` is unknown ("") for 15% of users; otherwise, with probability
0.35, the age group their favourite topic leans to, else a draw from a fixed base
distribution: it correlates weakly with taste.

**Sequences.** Each interaction first picks a domain: the previous one with
probability ``domain_stickiness`` (0.3), else a draw from the user's domain shares.
Then an item:

1. right after a switch of domain, the counterpart of the item just consumed, with
   probability ``companion_follow`` (0.5) (the user reads the novel of the film);
2. else, if the user's last item in this domain has an unconsumed next part, that
   part with probability ``series_continuation`` (0.6);
3. else a topic, as a Markov chain that runs across domain switches: the previous
   topic with probability ``topic_stickiness`` (0.7), a related topic with
   probability ``topic_drift`` (0.1), else a draw from the user's taste in this
   domain; then an item of that topic and domain by popularity.

A user never consumes an item twice. Timestamps are a synthetic clock in unix
seconds from 2015-01-01, strictly increasing per user (exponential gaps, mean three
days).

**Split.** ``protocols.leave_one_out`` (protocol ``synthetic-loo``): per user, the
last item is the test target, the second to last the validation target, the rest
training data.

:func:`generate` returns the hidden ground truth (topics, tastes, series,
counterparts) with the data set, for tests that check the signal is there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.data.dataset import CrossDomainDataset, Domain
from fedscope.data.errors import ProblemLog
from fedscope.data.protocols import leave_one_out
from fedscope.data.registry import DatasetSpec, register

# Bump whenever the output for given options changes: the on-disk cache and the stored
# evaluation candidates are keyed on it.
GENERATOR_VERSION = 1
AGE_RANGES = ("18-24", "25-34", "35-44", "45-54", "55+")
_AGE_BASE = np.array([0.15, 0.3, 0.25, 0.18, 0.12])
_AGE_UNKNOWN = 0.15
_AGE_FROM_TASTE = 0.35
_START_TIME = 1_420_070_400  # 2015-01-01 UTC
_DAY = 86_400


@dataclass(frozen=True)
class Topic:
    label: str
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    groceries: tuple[str, ...]
    kitchenware: tuple[str, ...]
    age: int  # index into AGE_RANGES of the age group this topic leans to
    related: tuple[str, ...]  # labels of topics a taste drifts to


TOPICS: tuple[Topic, ...] = (
    Topic(
        "Italian",
        ("Italian", "Tuscan", "Sicilian", "Roman", "Venetian", "Neapolitan"),
        ("Pasta", "Piazza", "Trattoria", "Villa", "Risotto", "Gondola", "Olive Grove"),
        (
            "Pasta Sauce",
            "Penne Rigate",
            "Extra Virgin Olive Oil",
            "Parmigiano Cheese",
            "Basil Pesto",
        ),
        ("Pasta Maker", "Pizza Stone", "Ravioli Press", "Cheese Grater", "Pasta Pot"),
        2,
        ("Wine & Cocktails", "French"),
    ),
    Topic(
        "Japanese",
        ("Japanese", "Kyoto", "Tokyo", "Osaka", "Zen"),
        ("Sushi", "Ramen", "Samurai", "Cherry Blossom", "Izakaya", "Temple", "Bonsai"),
        ("Ramen Noodles", "Miso Paste", "Sushi Rice", "Soy Sauce", "Nori Sheets"),
        ("Santoku Knife", "Sushi Rolling Kit", "Rice Cooker", "Chopstick Set", "Donabe Pot"),
        0,
        ("Seafood & Coastal", "Coffee & Tea"),
    ),
    Topic(
        "Mexican",
        ("Mexican", "Oaxacan", "Baja", "Yucatan", "Tex-Mex"),
        ("Taco", "Fiesta", "Salsa", "Cantina", "Desert", "Mariachi", "Hacienda"),
        ("Salsa Verde", "Tortilla Chips", "Chipotle Peppers", "Corn Tortillas", "Mole Sauce"),
        ("Tortilla Press", "Molcajete", "Taco Holder Set", "Comal Griddle", "Salsa Bowl Set"),
        1,
        ("Barbecue & Grilling", "Southern & Country"),
    ),
    Topic(
        "French",
        ("French", "Parisian", "Provencal", "Breton", "Burgundy"),
        ("Bistro", "Boulevard", "Chateau", "Croissant", "Baguette", "Lavender Field", "Brasserie"),
        ("Dijon Mustard", "Brie Cheese", "Butter Croissants", "Herbes de Provence", "Macarons"),
        ("Crepe Pan", "Dutch Oven", "Gratin Dish", "Copper Saucepan", "Baguette Tray"),
        3,
        ("Wine & Cocktails", "Baking & Desserts", "Italian"),
    ),
    Topic(
        "Indian",
        ("Indian", "Punjabi", "Mumbai", "Kerala", "Rajasthani"),
        ("Curry", "Spice Market", "Monsoon", "Masala", "Bollywood", "Palace", "Saffron"),
        ("Garam Masala", "Basmati Rice", "Tikka Masala Sauce", "Mango Chutney", "Masala Chai"),
        ("Spice Box", "Pressure Cooker", "Tandoor Skewers", "Tawa Pan", "Idli Steamer"),
        1,
        ("Healthy & Vegan", "Coffee & Tea"),
    ),
    Topic(
        "Baking & Desserts",
        ("Sweet", "Golden", "Buttery", "Frosted", "Homemade"),
        ("Cake", "Bakery", "Cupcake", "Pie", "Cookie Jar", "Sourdough", "Pastry"),
        ("Chocolate Chips", "Baking Flour", "Vanilla Extract", "Cake Mix", "Rainbow Sprinkles"),
        ("Stand Mixer", "Bundt Pan", "Cookie Sheet", "Rolling Pin", "Cake Stand"),
        2,
        ("Coffee & Tea", "Holiday & Christmas", "French"),
    ),
    Topic(
        "Coffee & Tea",
        ("Roasted", "Morning", "Brewed", "Steaming", "Cozy"),
        ("Espresso", "Latte", "Coffeehouse", "Barista", "Teapot", "Cappuccino", "Tea Garden"),
        (
            "Espresso Beans",
            "Green Tea Bags",
            "Cold Brew Coffee",
            "Earl Grey Tea",
            "Hazelnut Creamer",
        ),
        ("Espresso Machine", "French Press", "Burr Grinder", "Pour-Over Kettle", "Tea Infuser"),
        1,
        ("Baking & Desserts", "Japanese"),
    ),
    Topic(
        "Barbecue & Grilling",
        ("Smoky", "Texas", "Backyard", "Charred", "Kansas City"),
        ("Grill", "Brisket", "Smokehouse", "Ribs", "Pitmaster", "Bonfire", "Cookout"),
        ("BBQ Sauce", "Dry Rub", "Beef Jerky", "Smoked Paprika", "Hickory Smoked Bacon"),
        ("Grill Tongs", "Meat Thermometer", "Smoker Box", "Grill Pan", "Basting Brush"),
        3,
        ("Southern & Country", "Mexican", "Outdoors & Camping"),
    ),
    Topic(
        "Healthy & Vegan",
        ("Green", "Plant-Based", "Vegan", "Fresh", "Wholesome"),
        ("Smoothie", "Harvest", "Salad", "Sprout", "Detox", "Farmers Market", "Kale"),
        ("Quinoa", "Almond Milk", "Chia Seeds", "Kale Chips", "Pea Protein Powder"),
        ("High-Speed Blender", "Juicer", "Spiralizer", "Salad Spinner", "Sprouting Jar"),
        0,
        ("Fitness & Sports", "Indian"),
    ),
    Topic(
        "Kids & Family",
        ("Happy", "Little", "Silly", "Sunny", "Rainbow"),
        (
            "Dinosaur",
            "Puppy",
            "Lunchbox",
            "Playground",
            "Birthday Party",
            "Teddy Bear",
            "Treehouse",
        ),
        ("Fruit Snacks", "Animal Crackers", "Apple Juice Boxes", "Mac and Cheese", "Gummy Bears"),
        ("Kids Plate Set", "Bento Lunchbox", "Sippy Cup", "Popsicle Molds", "Pancake Molds"),
        2,
        ("Holiday & Christmas", "Baking & Desserts"),
    ),
    Topic(
        "Holiday & Christmas",
        ("Christmas", "Festive", "Snowy", "Winter", "Jolly"),
        ("Holiday", "Sleigh", "Gingerbread", "Reindeer", "Mistletoe", "Snowflake", "Fireplace"),
        ("Candy Canes", "Gingerbread Cookies", "Hot Cocoa Mix", "Eggnog", "Peppermint Bark"),
        (
            "Cookie Cutters",
            "Festive Mug Set",
            "Gingerbread House Kit",
            "Roasting Pan",
            "Holiday Platter",
        ),
        4,
        ("Kids & Family", "Baking & Desserts"),
    ),
    Topic(
        "Outdoors & Camping",
        ("Wild", "Mountain", "Alpine", "Rugged", "Backcountry"),
        ("Trail", "Campfire", "Canyon", "Wilderness", "Summit", "River", "Cabin"),
        ("Trail Mix", "Freeze-Dried Meals", "Instant Oatmeal", "Dried Fruit", "Camp Coffee"),
        (
            "Camping Cookware Set",
            "Insulated Thermos",
            "Camp Kettle",
            "Enamel Mug",
            "Collapsible Bowl",
        ),
        1,
        ("Fitness & Sports", "Barbecue & Grilling", "Seafood & Coastal"),
    ),
    Topic(
        "Seafood & Coastal",
        ("Coastal", "Seaside", "Maritime", "Nantucket", "Pacific"),
        ("Lighthouse", "Oyster", "Lobster", "Tide", "Harbor", "Sailboat", "Fisherman"),
        ("Wild Salmon Fillets", "Canned Tuna", "Clam Chowder", "Smoked Oysters", "Sea Salt Flakes"),
        ("Oyster Knife", "Fish Spatula", "Seafood Cracker Set", "Steamer Pot", "Paella Pan"),
        4,
        ("Outdoors & Camping", "Japanese"),
    ),
    Topic(
        "Wine & Cocktails",
        ("Vintage", "Sparkling", "Napa", "Midnight", "Velvet"),
        ("Cocktail", "Wine Cellar", "Sommelier", "Martini", "Speakeasy", "Vineyard", "Champagne"),
        (
            "Cabernet Sauvignon",
            "Margarita Mix",
            "Tonic Water",
            "Cocktail Cherries",
            "Sparkling Cider",
        ),
        ("Cocktail Shaker", "Wine Decanter", "Corkscrew", "Wine Glasses", "Ice Cube Molds"),
        3,
        ("Italian", "French"),
    ),
    Topic(
        "Southern & Country",
        ("Southern", "Country", "Georgia", "Carolina", "Tennessee"),
        ("Porch", "Farmhouse", "Biscuit", "Bluegrass", "Magnolia", "Ranch", "Cornbread"),
        ("Stone-Ground Grits", "Hot Sauce", "Pecan Pralines", "Cornbread Mix", "Sweet Tea"),
        ("Cast Iron Skillet", "Biscuit Cutter", "Mason Jars", "Cornbread Pan", "Pie Dish"),
        4,
        ("Barbecue & Grilling", "Mexican"),
    ),
    Topic(
        "Fitness & Sports",
        ("Athletic", "Champion", "Marathon", "Power", "Iron"),
        ("Workout", "Training Camp", "Stadium", "Coach", "Finish Line", "Game Day", "Gym"),
        ("Protein Bars", "Electrolyte Drink", "Whey Protein", "Energy Gel", "Peanut Butter"),
        ("Shaker Bottle", "Meal Prep Containers", "Food Scale", "Water Bottle", "Blender Cup"),
        0,
        ("Healthy & Vegan", "Outdoors & Camping"),
    ),
)


@dataclass(frozen=True)
class DomainKind:
    name: str
    key_prefix: str
    category_root: str
    series_share: float  # share of items that belong to a series of 2-4 parts
    years: tuple[int, int] | None  # release years, for domains where a year makes sense
    brands: tuple[str, ...]  # for domains where a brand makes sense


_FOOD_BRANDS = (
    "Harvest Lane",
    "Golden Acre",
    "Blue Mesa",
    "Maple & Co.",
    "Sunny Valley",
    "True North",
    "Old Mill",
    "Green Meadow",
    "Red Barn",
    "Silver Spoon",
    "Hillside Pantry",
    "Good Table",
)
_KITCHEN_BRANDS = (
    "ChefLine",
    "HomeCraft",
    "KitchenWise",
    "Ironwood",
    "Copperleaf",
    "NordHaus",
    "Pantry Pro",
    "Everyday Chef",
    "Oak & Steel",
    "BrightHome",
)

DOMAIN_KINDS: dict[str, DomainKind] = {
    "Books": DomainKind("Books", "book", "Books", 0.25, (1985, 2023), ()),
    "Movies": DomainKind("Movies", "movie", "Movies & TV", 0.15, (1975, 2023), ()),
    "Food": DomainKind("Food", "food", "Grocery & Gourmet Food", 0.0, None, _FOOD_BRANDS),
    "Kitchen": DomainKind("Kitchen", "kitchen", "Home & Kitchen", 0.0, None, _KITCHEN_BRANDS),
    "Music": DomainKind("Music", "music", "Music", 0.1, (1965, 2023), ()),
}

_BOOK_WORDS = (
    "Companion",
    "Handbook",
    "Diaries",
    "Chronicles",
    "Guide",
    "Cookbook",
    "Stories",
    "Letters",
    "Journal",
    "Almanac",
)
_BOOK_GENRES = ("Memoir", "Novel", "Cookbook", "Mystery", "Love Story", "Field Guide", "Saga")
_MOVIE_WORDS = (
    "Nights",
    "Summer",
    "Dreams",
    "Hearts",
    "Secrets",
    "Road",
    "Affair",
    "Promise",
    "Sunrise",
    "Weekend",
)
_MUSIC_WORDS = (
    "Serenade",
    "Sessions",
    "Melodies",
    "Grooves",
    "Ballads",
    "Rhythms",
    "Lullabies",
    "Anthems",
)
_SIZES = ("8 oz", "12 oz", "16 oz", "1 lb", "Pack of 6", "Pack of 12", "24 Count", "32 oz")
_MATERIALS = (
    "Stainless Steel",
    "Dishwasher Safe",
    "BPA-Free",
    "Set of 2",
    "Large",
    "Compact",
    "Black",
    "White",
)
_ROMAN = ("I", "II", "III", "IV")

DEFAULTS: dict[str, Any] = {
    "name": "synthetic",
    "seed": 0,
    "domains": ["Books", "Movies"],
    "n_users": 4000,
    "n_items": 2000,  # per domain: an int, or one int per domain
    "n_topics": 16,
    "overlap": 0.6,
    "cold_start": 0.3,
    "mean_length": 12.0,
    "max_length": 50,
    "zipf": 0.9,
    "taste_concentration": 0.2,
    "taste_sharing": 0.8,
    "topic_stickiness": 0.7,
    "topic_drift": 0.1,
    "domain_stickiness": 0.3,
    "domain_concentration": 2.0,
    "series_continuation": 0.6,
    "companion_share": 0.15,
    "companion_follow": 0.5,
    "text_noise": 0.1,
    "missing_text": 0.1,
}
_PROBABILITIES = (
    "overlap",
    "cold_start",
    "taste_sharing",
    "topic_stickiness",
    "topic_drift",
    "domain_stickiness",
    "series_continuation",
    "companion_share",
    "companion_follow",
    "text_noise",
    "missing_text",
)


@dataclass(frozen=True)
class SyntheticTruth:
    """The hidden generative state behind a generated data set."""

    topic_labels: tuple[str, ...]
    item_topic: np.ndarray  # int64 [n_items_total]: topic of each global item
    series_next: np.ndarray  # int64 [n_items_total]: global id of the next part, -1 if none
    companion: np.ndarray  # int64 [n_items_total]: global id of the counterpart, -1 if none
    user_taste: np.ndarray  # float64 [U, K]: the taste shared by all domains
    user_domain_taste: np.ndarray  # float64 [U, D, K]: the taste actually used per domain
    user_active: np.ndarray  # bool [U, D]: domains the user is active in


def resolve_options(options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults filled in and every option checked; raises ValueError naming the bad one."""
    opts = dict(DEFAULTS)
    unknown = sorted(set(options or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown option(s) for data set 'synthetic': {', '.join(unknown)}; "
            f"known: {', '.join(sorted(DEFAULTS))}"
        )
    opts.update(options or {})
    domains = opts["domains"]
    if isinstance(domains, str):
        domains = [d.strip() for d in domains.split(",") if d.strip()]
    domains = list(domains)
    bad = [d for d in domains if d not in DOMAIN_KINDS]
    if bad or len(domains) < 2 or len(set(domains)) != len(domains):
        raise ValueError(
            f"option 'domains' must name two or more distinct domains from "
            f"{', '.join(DOMAIN_KINDS)}; got {domains}"
        )
    opts["domains"] = domains
    n_items = opts["n_items"]
    n_items = [int(n_items)] * len(domains) if np.isscalar(n_items) else [int(n) for n in n_items]
    if len(n_items) != len(domains):
        raise ValueError(f"option 'n_items' gives {len(n_items)} sizes for {len(domains)} domains")
    opts["n_items"] = n_items
    if not 1 <= int(opts["n_topics"]) <= len(TOPICS):
        raise ValueError(f"option 'n_topics' must be in [1, {len(TOPICS)}], got {opts['n_topics']}")
    opts["n_topics"] = int(opts["n_topics"])
    if min(n_items) < opts["n_topics"]:
        raise ValueError(
            f"option 'n_items' ({min(n_items)}) must be at least n_topics ({opts['n_topics']}) "
            "so that every topic has an item in every domain"
        )
    if int(opts["n_users"]) < 1:
        raise ValueError(f"option 'n_users' must be positive, got {opts['n_users']}")
    opts["n_users"] = int(opts["n_users"])
    opts["seed"] = int(opts["seed"])
    opts["max_length"] = int(opts["max_length"])
    if opts["max_length"] < 6:
        raise ValueError(f"option 'max_length' must be at least 6, got {opts['max_length']}")
    if not 6.0 <= float(opts["mean_length"]) <= opts["max_length"]:
        raise ValueError(
            f"option 'mean_length' must be in [6, max_length={opts['max_length']}], "
            f"got {opts['mean_length']}"
        )
    for key in ("mean_length", "zipf", "taste_concentration", "domain_concentration"):
        opts[key] = float(opts[key])
        if opts[key] <= 0:
            raise ValueError(f"option {key!r} must be positive, got {opts[key]}")
    for key in _PROBABILITIES:
        opts[key] = float(opts[key])
        if not 0.0 <= opts[key] <= 1.0:
            raise ValueError(
                f"option {key!r} is a probability and must be in [0, 1], got {opts[key]}"
            )
    if opts["topic_stickiness"] + opts["topic_drift"] > 1.0:
        raise ValueError("options 'topic_stickiness' + 'topic_drift' must not exceed 1")
    return opts


# --- item catalogue --------------------------------------------------------------------------


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def _title(rng: np.random.Generator, kind: DomainKind, topic: Topic) -> str:
    adj, noun = _pick(rng, topic.adjectives), _pick(rng, topic.nouns)
    form = int(rng.integers(4))
    if kind.name == "Books":
        if form == 0:
            return f"The {adj} {noun} {_pick(rng, _BOOK_WORDS)}"
        if form == 1:
            genre = _pick(rng, _BOOK_GENRES)
            article = "An" if adj[0] in "AEIOU" else "A"
            return f"{noun}: {article} {adj} {genre}"
        if form == 2:
            return f"Secrets of the {adj} {noun}"
        return f"My {adj} {noun}"
    if kind.name == "Movies":
        if form == 0:
            return f"{adj} {_pick(rng, _MOVIE_WORDS)}"
        if form == 1:
            return f"{noun} {_pick(rng, _MOVIE_WORDS)}"
        if form == 2:
            return f"The Last {noun}"
        return f"Return to the {adj} {noun}"
    if kind.name == "Music":
        if form == 0:
            return f"{adj} {_pick(rng, _MUSIC_WORDS)}"
        if form == 1:
            return f"Songs from the {noun}"
        if form == 2:
            return f"{noun} {_pick(rng, _MUSIC_WORDS)}"
        return f"The {adj} Collection"
    brand = _pick(rng, kind.brands)
    if kind.name == "Food":
        product = _pick(rng, topic.groceries)
        lead = f"{adj} " if form < 2 else ""
        return f"{brand} {lead}{product}, {_pick(rng, _SIZES)}"
    product = _pick(rng, topic.kitchenware)
    lead = f"{adj} " if form == 0 else ""
    return f"{brand} {lead}{product}, {_pick(rng, _MATERIALS)}"


def _series_title(kind: DomainKind, base: str, part: int) -> str:
    if part == 0:
        return base
    if kind.name == "Books":
        return f"{base}, Book {part + 1}"
    if kind.name == "Movies":
        return f"{base} {part + 1}"
    return f"{base}, Vol. {_ROMAN[part]}"


@dataclass
class _Catalogue:
    topic: np.ndarray  # int64 [n]: topic per local item
    weight: np.ndarray  # float64 [n]: popularity weight
    series_next: np.ndarray  # int64 [n]: local id of the next part, -1 if none
    attributes: dict[str, tuple[str, ...]]
    standalone: np.ndarray  # bool [n]: not part of a series (may get a companion)
    by_topic: list[np.ndarray]  # local ids per topic
    cdf_by_topic: list[np.ndarray]  # cumulative popularity per topic, same order


def _make_catalogue(
    rng: np.random.Generator, kind: DomainKind, n_items: int, topic_share: np.ndarray, opts: dict
) -> _Catalogue:
    n_topics = topic_share.shape[0]
    # Every topic gets an item in every domain, so that every taste can be served everywhere.
    counts = 1 + rng.multinomial(n_items - n_topics, topic_share)
    topic = rng.permutation(np.repeat(np.arange(n_topics), counts)).astype(np.int64)
    rank = rng.permutation(n_items)
    weight = 1.0 / (rank + 1.0) ** opts["zipf"]
    topics = [TOPICS[t] for t in range(n_topics)]
    series_next = np.full(n_items, -1, dtype=np.int64)
    part = np.zeros(n_items, dtype=np.int64)
    if kind.series_share > 0:
        for t in range(n_topics):
            members = rng.permutation(np.nonzero(topic == t)[0])
            n_series_items = int(np.rint(kind.series_share * members.shape[0]))
            pos = 0
            while n_series_items - pos >= 2:
                length = int(min(rng.integers(2, 5), n_series_items - pos))
                chain = members[pos : pos + length]
                series_next[chain[:-1]] = chain[1:]
                part[chain] = np.arange(length)
                pos += length
    titles: list[str] = [""] * n_items
    seen: set[str] = set()
    for i in range(n_items):
        if part[i] > 0:
            continue  # written with the first part below
        source = topics[topic[i]]
        if rng.random() < opts["text_noise"]:
            source = topics[int(rng.integers(n_topics))]
        title = _title(rng, kind, source)
        for _ in range(8):  # duplicates happen in real catalogues, but few
            if title not in seen:
                break
            title = _title(rng, kind, source)
        seen.add(title)
        j, k = i, 0
        while j >= 0:
            titles[j] = _series_title(kind, title, k)
            j, k = int(series_next[j]), k + 1
    missing_title = rng.random(n_items) < opts["missing_text"]
    missing_category = rng.random(n_items) < opts["missing_text"] / 2
    attributes: dict[str, tuple[str, ...]] = {
        "title": tuple("" if missing_title[i] else titles[i] for i in range(n_items)),
        "category": tuple(
            "" if missing_category[i] else f"{kind.category_root} > {topics[topic[i]].label}"
            for i in range(n_items)
        ),
    }
    if kind.years is not None:
        low, high = kind.years
        years = rng.integers(low, high + 1, size=n_items)
        for i in range(n_items):  # parts of a series come out in order
            j = int(series_next[i])
            if j >= 0 and part[i] == 0:
                y = int(years[i])
                while j >= 0:
                    y = min(high, y + int(rng.integers(1, 4)))
                    years[j] = y
                    j = int(series_next[j])
        missing_year = rng.random(n_items) < 0.05
        attributes["year"] = tuple("" if missing_year[i] else str(years[i]) for i in range(n_items))
    else:
        attributes["year"] = tuple("" for _ in range(n_items))
    if kind.brands:
        brands = []
        for i in range(n_items):
            t = titles[i]
            brand = next((b for b in kind.brands if t.startswith(b + " ")), "")
            brands.append("" if missing_title[i] else brand)
        attributes["brand"] = tuple(brands)
    else:
        attributes["brand"] = tuple("" for _ in range(n_items))
    by_topic = [np.nonzero(topic == t)[0] for t in range(n_topics)]
    cdf_by_topic = [np.cumsum(weight[ids]) for ids in by_topic]
    standalone = (part == 0) & (series_next < 0)
    return _Catalogue(topic, weight, series_next, attributes, standalone, by_topic, cdf_by_topic)


def _companion_title(target: str, source: str, source_title: str) -> str | None:
    """Title of a film's counterpart: the novel it is based on, or its soundtrack.

    None where no title is shared (other domain pairs are linked by behaviour only).
    """
    if source != "Movies":
        return None
    if target == "Books":
        return source_title
    if target == "Music":
        return f"{source_title} (Original Soundtrack)"
    return None


def _link_companions(
    rng: np.random.Generator,
    kinds: list[DomainKind],
    catalogues: list[_Catalogue],
    offsets: list[int],
    n_topics: int,
    share: float,
) -> np.ndarray:
    """Pair same-topic standalone items across domains; returns global companion ids."""
    total = offsets[-1] + catalogues[-1].topic.shape[0]
    companion = np.full(total, -1, dtype=np.int64)
    titles = [list(c.attributes["title"]) for c in catalogues]
    for a in range(len(catalogues)):
        for b in range(a + 1, len(catalogues)):
            ca, cb = catalogues[a], catalogues[b]
            for t in range(n_topics):
                free_a = np.nonzero((ca.topic == t) & ca.standalone)[0]
                free_b = np.nonzero((cb.topic == t) & cb.standalone)[0]
                free_a = free_a[companion[offsets[a] + free_a] < 0]
                free_b = free_b[companion[offsets[b] + free_b] < 0]
                k = int(np.rint(share * min(free_a.shape[0], free_b.shape[0])))
                if k == 0:
                    continue
                pick_a = rng.choice(free_a, size=k, replace=False)
                pick_b = rng.choice(free_b, size=k, replace=False)
                companion[offsets[a] + pick_a] = offsets[b] + pick_b
                companion[offsets[b] + pick_b] = offsets[a] + pick_a
                for i, j in zip(pick_a.tolist(), pick_b.tolist(), strict=True):
                    # a missing title stays missing: the link is then behavioural only
                    if not (titles[a][i] and titles[b][j]):
                        continue
                    to_b = _companion_title(kinds[b].name, kinds[a].name, titles[a][i])
                    to_a = _companion_title(kinds[a].name, kinds[b].name, titles[b][j])
                    if to_b is not None:
                        titles[b][j] = to_b
                    elif to_a is not None:
                        titles[a][i] = to_a
    for c, tl in zip(catalogues, titles, strict=True):
        c.attributes["title"] = tuple(tl)
    return companion


# --- users and sequences ---------------------------------------------------------------------


def _draw(rng: np.random.Generator, cdf: np.ndarray) -> int:
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def _related_topics(n_topics: int) -> list[np.ndarray]:
    index = {TOPICS[t].label: t for t in range(n_topics)}
    out = []
    for t in range(n_topics):
        rel = [index[label] for label in TOPICS[t].related if label in index]
        out.append(np.array(rel or [t], dtype=np.int64))
    return out


def _user_sequence(
    rng: np.random.Generator,
    length: int,
    active: np.ndarray,
    domain_cdf: np.ndarray,
    taste_cdf: np.ndarray,
    catalogues: list[_Catalogue],
    offsets: list[int],
    companion: np.ndarray,
    related: list[np.ndarray],
    opts: dict,
) -> np.ndarray:
    """One user's mixed-domain sequence of global item ids."""
    n_act = active.shape[0]
    dom = np.empty(length, dtype=np.int64)
    dom[0] = _draw(rng, domain_cdf)
    for p in range(1, length):
        stay = rng.random() < opts["domain_stickiness"]
        dom[p] = dom[p - 1] if stay else _draw(rng, domain_cdf)
    counts = np.bincount(dom, minlength=n_act)
    for a in np.nonzero(counts == 0)[0]:  # every active domain gets at least one interaction
        donors = np.nonzero(counts[dom] > 1)[0]
        p = int(donors[int(rng.integers(donors.shape[0]))])
        counts[dom[p]] -= 1
        dom[p] = a
        counts[a] += 1
    taken: list[set[int]] = [set() for _ in range(n_act)]
    last_in_domain = [-1] * n_act
    out = np.empty(length, dtype=np.int64)
    topic = -1
    for p in range(length):
        a = int(dom[p])
        cat = catalogues[int(active[a])]
        start = offsets[int(active[a])]
        counterpart = int(companion[out[p - 1]]) - start if p > 0 and dom[p - 1] != a else -1
        nxt = cat.series_next[last_in_domain[a]] if last_in_domain[a] >= 0 else -1
        if (
            0 <= counterpart < cat.topic.shape[0]
            and counterpart not in taken[a]
            and rng.random() < opts["companion_follow"]
        ):
            item = counterpart  # the adaptation of what the user just read or watched
            topic = int(cat.topic[item])
        elif nxt >= 0 and int(nxt) not in taken[a] and rng.random() < opts["series_continuation"]:
            item = int(nxt)
            topic = int(cat.topic[item])
        else:
            r = rng.random()
            if topic >= 0 and r < opts["topic_stickiness"]:
                pass
            elif topic >= 0 and r < opts["topic_stickiness"] + opts["topic_drift"]:
                rel = related[topic]
                topic = int(rel[int(rng.integers(rel.shape[0]))])
            else:
                topic = _draw(rng, taste_cdf[a])
            ids, cdf = cat.by_topic[topic], cat.cdf_by_topic[topic]
            item = int(ids[_draw(rng, cdf)])
            tries = 0
            while item in taken[a] and tries < 6:
                item = int(ids[_draw(rng, cdf)])
                tries += 1
            if item in taken[a]:  # topic nearly used up by this user: fall back to any new item
                free = np.setdiff1d(ids, np.fromiter(taken[a], dtype=np.int64))
                if free.shape[0] == 0:
                    n = cat.topic.shape[0]
                    free = np.setdiff1d(np.arange(n), np.fromiter(taken[a], dtype=np.int64))
                if free.shape[0] > 0:
                    item = int(free[int(rng.integers(free.shape[0]))])
                # else: a tiny domain the user has exhausted; only then is an item repeated
        taken[a].add(item)
        last_in_domain[a] = item
        out[p] = start + item
    return out


def _lengths(rng: np.random.Generator, n_users: int, opts: dict) -> np.ndarray:
    cold = rng.random(n_users) < opts["cold_start"]
    cold_len = rng.choice(np.array([2, 3, 4, 5]), size=n_users, p=[0.1, 0.3, 0.3, 0.3])
    extra = rng.geometric(1.0 / (opts["mean_length"] - 5.0), size=n_users)  # mean mean_length-5
    warm_len = np.minimum(5 + extra, opts["max_length"])
    return np.where(cold, cold_len, warm_len).astype(np.int64)


def generate(**options: Any) -> tuple[CrossDomainDataset, SyntheticTruth]:
    """Generate the data set and its hidden ground truth from ``options`` (see DEFAULTS)."""
    opts = resolve_options(options)
    kinds = [DOMAIN_KINDS[name] for name in opts["domains"]]
    n_dom, n_topics, n_users = len(kinds), opts["n_topics"], opts["n_users"]
    root = np.random.SeedSequence([opts["seed"], GENERATOR_VERSION])
    world_seq, catalogue_seq, user_seq, link_seq = root.spawn(4)
    world_rng = np.random.default_rng(world_seq)
    topic_pop = world_rng.dirichlet(np.full(n_topics, 4.0))
    topic_share = world_rng.dirichlet(np.full(n_topics, 8.0))

    # One stream per domain catalogue, so a domain's items do not depend on the user count.
    catalogues = [
        _make_catalogue(np.random.default_rng(s), kind, n, topic_share, opts)
        for s, kind, n in zip(catalogue_seq.spawn(n_dom), kinds, opts["n_items"], strict=True)
    ]
    offsets = [0, *np.cumsum(opts["n_items"])[:-1].tolist()]
    companion = _link_companions(
        np.random.default_rng(link_seq),
        kinds,
        catalogues,
        offsets,
        n_topics,
        opts["companion_share"],
    )
    domains = [
        Domain(
            name=kind.name,
            offset=int(off),
            item_keys=tuple(f"{kind.key_prefix}-{i:06d}" for i in range(n)),
            item_attributes=cat.attributes,
        )
        for kind, off, n, cat in zip(kinds, offsets, opts["n_items"], catalogues, strict=True)
    ]

    rng = np.random.default_rng(user_seq)
    alpha = opts["taste_concentration"] * n_topics * topic_pop
    shared = rng.dirichlet(alpha, size=n_users)
    own = rng.dirichlet(alpha, size=(n_users, n_dom))
    s = opts["taste_sharing"]
    domain_taste = s * shared[:, None, :] + (1.0 - s) * own
    overlapping = rng.random(n_users) < opts["overlap"]
    active_mask = np.zeros((n_users, n_dom), dtype=bool)
    for u in range(n_users):
        if overlapping[u]:
            k = n_dom if n_dom == 2 else int(rng.integers(2, n_dom + 1))
            active_mask[u, rng.choice(n_dom, size=k, replace=False)] = True
        else:
            active_mask[u, int(rng.integers(n_dom))] = True
    lengths = np.maximum(_lengths(rng, n_users, opts), active_mask.sum(axis=1))
    related = _related_topics(n_topics)
    seqs: list[np.ndarray] = []
    times: list[np.ndarray] = []
    for u in range(n_users):
        active = np.nonzero(active_mask[u])[0]
        domain_cdf = np.cumsum(
            rng.dirichlet(np.full(active.shape[0], opts["domain_concentration"]))
        )
        taste_cdf = np.cumsum(domain_taste[u, active], axis=1)
        seqs.append(
            _user_sequence(
                rng,
                int(lengths[u]),
                active,
                domain_cdf,
                taste_cdf,
                catalogues,
                offsets,
                companion,
                related,
                opts,
            )
        )
        start = _START_TIME + int(rng.integers(0, 3 * 365 * _DAY))
        gaps = 60 + rng.exponential(3 * _DAY, size=int(lengths[u])).astype(np.int64)
        times.append(start + np.cumsum(gaps))

    favourite = shared.argmax(axis=1)
    leaning = np.array([TOPICS[t].age for t in range(n_topics)])[favourite]
    base_age = rng.choice(len(AGE_RANGES), size=n_users, p=_AGE_BASE)
    age = np.where(rng.random(n_users) < _AGE_FROM_TASTE, leaning, base_age)
    unknown_age = rng.random(n_users) < _AGE_UNKNOWN
    age_range = ["" if unknown_age[u] else AGE_RANGES[int(age[u])] for u in range(n_users)]

    ds = leave_one_out(
        name=opts["name"],
        protocol="synthetic-loo",
        protocol_note=(
            "Generated data (fedscope 'synthetic', see its module docstring): leave-one-out on "
            "each user's mixed-domain sequence; last item test, second to last validation, the "
            "prefix training; users with fewer than 3 interactions are training-only."
        ),
        domains=domains,
        user_keys=[f"user-{u:06d}" for u in range(n_users)],
        user_seqs=seqs,
        user_times=times,
        user_attributes={"age_range": age_range},
    )
    ds.notes.extend(_describe(ds, opts, overlapping, lengths))
    ds.fingerprint = _fingerprint(ds, opts)
    truth = SyntheticTruth(
        topic_labels=tuple(TOPICS[t].label for t in range(n_topics)),
        item_topic=np.concatenate([c.topic for c in catalogues]),
        series_next=np.concatenate(
            [
                np.where(c.series_next >= 0, c.series_next + off, -1)
                for c, off in zip(catalogues, offsets, strict=True)
            ]
        ),
        companion=companion,
        user_taste=shared,
        user_domain_taste=domain_taste,
        user_active=active_mask,
    )
    return ds, truth


def _describe(
    ds: CrossDomainDataset, opts: dict, overlapping: np.ndarray, lengths: np.ndarray
) -> list[str]:
    coverage = ", ".join(f"{d.name} {d.text_coverage():.0%}" for d in ds.domains)
    return [
        f"generated by fedscope.data.formats.synthetic v{GENERATOR_VERSION} with seed "
        f"{opts['seed']}: {ds.n_users} users, "
        + ", ".join(f"{d.n_items} {d.name}" for d in ds.domains)
        + f" items, {opts['n_topics']} shared topics",
        f"{overlapping.mean():.0%} of users active in several domains; "
        f"{(lengths <= 5).mean():.0%} have at most 5 interactions",
        f"titles for {coverage} of items",
    ]


def _fingerprint(ds: CrossDomainDataset, opts: dict) -> str:
    # Content hash: sampled negatives are stored under it, so it must change with the data.
    h = hashlib.sha256()
    h.update(json.dumps(["synthetic", GENERATOR_VERSION, opts], sort_keys=True).encode())
    for arr in (ds.seq_offsets, ds.items, ds.times):
        h.update(np.ascontiguousarray(arr).tobytes())
    return "synthetic-" + h.hexdigest()[:24]


def build(folder: Path | None, log: ProblemLog, options: dict[str, Any]) -> CrossDomainDataset:
    ds, _ = generate(**options)
    return ds


register(
    DatasetSpec(
        name="synthetic",
        folder=None,
        description=(
            "Generated cross-domain data, no files needed (default Books-Movies, 4,000 users, "
            "2,000 items per domain): shared latent topics, sequential topic chains, series "
            "and cross-domain adaptations, long-tail popularity, overlapping and cold-start "
            "users, topic-bearing item text"
        ),
        required_files=(),
        optional_files=(),
        build=build,
        version=GENERATOR_VERSION,
        default_options=dict(DEFAULTS),
    )
)
