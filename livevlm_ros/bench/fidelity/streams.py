"""Seeded caption streams: events that persist over several frames, told in paraphrases.

A stream is a list of *frames*, each one short scene caption (a TEXT PROXY of a video frame: the
caption's token embeddings are ingested as the frame). Most frames are *filler* (scenery, no
colour, none of the event objects). Each stream holds ``len(POSITIONS)`` *events*, one in each
third of the stream (early, middle, late): an object of one colour seen over ``event_frames``
consecutive frames, each frame a different paraphrase ("A red van parks by the gate." /
"The van by the gate is red." / ...), as video repeats itself over consecutive frames.

One question per event: "What colour was the van? Answer with one word.", scored over
:data:`OPTIONS_PER_QUESTION` colour options (the gold colour, the other events' colours, and
random others), so chance is ``1 / OPTIONS_PER_QUESTION``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "grey")
OBJECTS = ("van", "truck", "bicycle", "dog", "bus", "umbrella", "kite", "ball", "bag", "horse", "boat", "balloon",
           "box", "coat", "tractor", "scooter")
PLACES = ("by the gate", "near the fence", "at the corner", "on the path", "beside the wall", "in the yard")
#: Paraphrases of one event frame (object, colour, place); consecutive frames of an event cycle through them.
EVENT_CAPTIONS = (
    "A {colour} {object} is {place}.",
    "The {object} {place} is {colour}.",
    "There is a {colour} {object} {place}.",
    "The {colour} {object} stays {place}.",
    "Still {place}: the {object}, {colour}.",
    "A {object}, {colour}, waits {place}.",
)
#: Filler frames: scenery without colours or event objects.
FILLERS = ("The road is empty.", "Nothing moves.", "Rain falls on the street.", "The scene is quiet.",
           "A tree sways in the wind.", "Clouds pass over the houses.", "The light changes slowly.",
           "Leaves blow across the ground.", "A bird flies past.", "The street lamp flickers.")
QUESTION = "What colour was the {object}? Answer with one word."
POSITIONS = ("early", "middle", "late")
OPTIONS_PER_QUESTION = 5
SECONDS_PER_FRAME = 1.0


@dataclass(frozen=True)
class Event:
    """One event: ``object`` of ``colour`` at ``place``, over frames ``[first, last]`` in third ``position``."""

    object: str
    colour: str
    place: str
    first: int
    last: int
    position: str

    def covers(self, frame: int) -> bool:
        return self.first <= frame <= self.last


@dataclass(frozen=True)
class Question:
    """A question about one event, with answer options (``options[gold]`` is right; capitalised words)."""

    text: str
    event: Event
    options: tuple
    gold: int


@dataclass(frozen=True)
class CaptionStream:
    """Captions (one per frame), their stream times (s), the events and one question per event."""

    seed: int
    captions: tuple
    times: tuple
    events: tuple
    questions: tuple

    @property
    def frames(self) -> int:
        return len(self.captions)

    def event_of_frame(self) -> list:
        """Per frame: the index of the event it shows, or -1 for filler."""
        owner = [-1] * self.frames
        for k, event in enumerate(self.events):
            for frame in range(event.first, event.last + 1):
                owner[frame] = k
        return owner


def make_stream(seed: int, frames: int = 48, event_frames: int = 4) -> CaptionStream:
    """A seeded stream of ``frames`` captions with one ``event_frames``-long event per third.

    Each event lies wholly inside its third, at a uniformly drawn start; objects, colours and
    places are distinct within a stream. The last event ends at least 3 frames before the end,
    so that "late" is long-term memory for short-term windows of up to 2 frames, not the clip
    being read.

    Raises:
        ValueError: a third is too short for an event (``frames < 3 * (event_frames + 3)``).
    """
    thirds = len(POSITIONS)
    if event_frames < 1 or frames < thirds * (event_frames + 3):
        raise ValueError(f"need >= {thirds * (event_frames + 3)} frames for {event_frames}-frame events, got {frames}")
    rng = random.Random(seed)
    objects = rng.sample(OBJECTS, thirds)
    colours = rng.sample(COLOURS, thirds)
    places = rng.sample(PLACES, thirds)
    bounds = [round(i * frames / thirds) for i in range(thirds + 1)]
    events = []
    for k in range(thirds):
        low, high = bounds[k], bounds[k + 1] - event_frames - (3 if k == thirds - 1 else 0)
        first = rng.randint(low, high)
        events.append(Event(objects[k], colours[k], places[k], first, first + event_frames - 1, POSITIONS[k]))
    owner = [-1] * frames
    for k, event in enumerate(events):
        for frame in range(event.first, event.last + 1):
            owner[frame] = k
    captions = []
    for index in range(frames):
        if owner[index] < 0:
            captions.append(rng.choice(FILLERS))
            continue
        event = events[owner[index]]
        template = EVENT_CAPTIONS[(index - event.first + seed) % len(EVENT_CAPTIONS)]
        text = template.format(colour=event.colour, object=event.object, place=event.place)
        captions.append(text[0].upper() + text[1:])
    questions = tuple(_question(event, colours, rng) for event in events)
    times = tuple(index * SECONDS_PER_FRAME for index in range(frames))
    return CaptionStream(seed, tuple(captions), times, tuple(events), questions)


def _question(event: Event, stream_colours: list, rng: random.Random) -> Question:
    """Options: the gold colour, the stream's other event colours (distractors), random others; shuffled."""
    others = [c for c in stream_colours if c != event.colour]
    spare = [c for c in COLOURS if c not in stream_colours]
    choices = [event.colour] + others + rng.sample(spare, OPTIONS_PER_QUESTION - 1 - len(others))
    rng.shuffle(choices)
    return Question(QUESTION.format(object=event.object), event, tuple(c.capitalize() for c in choices),
                    choices.index(event.colour))


def predicted_colour(answer: str):
    """The first colour word of a free-text answer (case-insensitive), or None."""
    for word in answer.lower().replace(",", " ").replace(".", " ").split():
        if word in COLOURS:
            return word
    return None
