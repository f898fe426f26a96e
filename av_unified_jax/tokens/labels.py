"""Official label strings of the benchmarks, spelled exactly as their annotation files do.

Class names are text in the unified vocabulary, so these lists are what `Tokenizer.build`
compiles into label tries. The list order is each benchmark's official class index order.
"""

from __future__ import annotations

import json
import re

# AVE: the 28 event classes in the official index order (background is index 28), spelled as
# the Category field of Annotations.txt. The order is the mil_labels.h5 order, not the file order.
AVE_CLASSES = (
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane",
    "Race car, auto racing", "Female speech, woman speaking", "Helicopter", "Violin, fiddle",
    "Flute", "Ukulele", "Frying (food)", "Truck", "Shofar", "Motorcycle", "Acoustic guitar",
    "Train horn", "Clock", "Banjo", "Goat", "Baby cry, infant cry", "Bus", "Chainsaw", "Cat",
    "Horse", "Toilet flush", "Rodents, rats, mice", "Accordion", "Mandolin",
)

# LLP (AVVP): the 25 classes in the order used by the official code, spelled as in the csvs.
LLP_CLASSES = (
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce",
    "Fire_alarm", "Chainsaw", "Cello", "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle",
    "Vacuum_cleaner", "Baby_laughter", "Accordion", "Lawn_mower", "Motorcycle", "Helicopter",
    "Acoustic_guitar", "Telephone_bell_ringing", "Baby_cry_infant_cry", "Blender", "Clapping",
)

# MUSIC-AVQA: the 41 distinct answers of the val and test sets (sorted). The paper's 42-way
# answer list is built from avqa-train.json in first-appearance order; build the tokenizer from
# the answers found in the converted training data when it is available, and map answers to
# indices by string (docs/BENCHMARKS.md 3.4).
MUSIC_AVQA_ANSWERS = (
    "accordion", "acoustic_guitar", "bagpipe", "banjo", "bassoon", "cello", "clarinet",
    "congas", "drum", "eight", "electric_bass", "erhu", "five", "flute", "four", "guzheng",
    "indoor", "left", "middle", "more_than_ten", "nine", "no", "one", "outdoor", "piano",
    "pipa", "right", "saxophone", "seven", "simultaneously", "six", "suona", "three",
    "trumpet", "tuba", "two", "ukulele", "violin", "xylophone", "yes", "zero",
)

# AVSBench S4: the 23 categories (the mask target does not name them; they are prompt text).
AVS_S4_CATEGORIES = (
    "baby_laughter", "female_singing", "male_speech", "dog_barking", "cat_meowing",
    "lions_roaring", "horse_clip-clop", "coyote_howling", "mynah_bird_singing",
    "playing_acoustic_guitar", "playing_tabla", "playing_violin", "playing_piano",
    "playing_ukulele", "playing_glockenspiel", "helicopter", "race_car", "driving_buses",
    "ambulance_siren", "typing_on_computer_keyboard", "chainsawing_trees", "cap_gun_shooting",
    "lawn_mowing",
)

OFFICIAL_LABEL_SETS = {
    "ave": AVE_CLASSES,
    "avvp": LLP_CLASSES,
    "avqa": MUSIC_AVQA_ANSWERS,
}

_PLACEHOLDER = re.compile(r"<[^<>]+>")


def fill_avqa_template(question_content: str, templ_values) -> str:
    """MUSIC-AVQA question text: each `<...>` placeholder replaced, in order, by a value.

    Args:
      question_content: e.g. "Is the <Object> louder than the <Object>?".
      templ_values: list of str, or the JSON string the annotation files store.
    Raises ValueError when the number of placeholders and values differ.
    """
    values = json.loads(templ_values) if isinstance(templ_values, str) else list(templ_values)
    parts = _PLACEHOLDER.split(question_content)
    if len(parts) - 1 != len(values):
        raise ValueError(
            f"question {question_content!r} has {len(parts) - 1} placeholders but "
            f"{len(values)} template values {values}")
    out = [parts[0]]
    for value, tail in zip(values, parts[1:], strict=True):
        out += [str(value), tail]
    return "".join(out)
