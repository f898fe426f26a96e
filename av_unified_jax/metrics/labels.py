"""Class-name lists of the benchmarks, in the index order their official code uses.

Sources (see BENCHMARKS.md): AVE-ECCV18 (`mil_labels.h5` order, background at index 28) and
AVVP-ECCV20 `main_avvp.py::eval` (the 25 LLP classes). MUSIC-AVQA's 42 answers are not listed
here: the official answer index is the first-appearance order over `avqa-train.json`, so it must
be built from that file.
"""

# AVE: 28 event classes; the 29-way output puts background at index 28.
AVE_CLASSES = (
    "Church bell", "Male speech", "Bark", "Fixed-wing aircraft", "Race car", "Female speech",
    "Helicopter", "Violin", "Flute", "Ukulele", "Frying (food)", "Truck", "Shofar", "Motorcycle",
    "Acoustic guitar", "Train horn", "Clock", "Banjo", "Goat", "Baby cry", "Bus", "Chainsaw",
    "Cat", "Horse", "Toilet flush", "Rodents", "Accordion", "Mandolin",
)
AVE_BACKGROUND_INDEX = 28
AVE_NUM_OUTPUTS = 29

# LLP / AVVP: 25 classes; the row order of every [25, 10] matrix of the AVVP metric.
LLP_CLASSES = (
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce",
    "Fire_alarm", "Chainsaw", "Cello", "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle",
    "Vacuum_cleaner", "Baby_laughter", "Accordion", "Lawn_mower", "Motorcycle", "Helicopter",
    "Acoustic_guitar", "Telephone_bell_ringing", "Baby_cry_infant_cry", "Blender", "Clapping",
)
LLP_NUM_SEGMENTS = 10

assert len(AVE_CLASSES) == AVE_BACKGROUND_INDEX == 28
assert len(LLP_CLASSES) == len(set(LLP_CLASSES)) == 25
