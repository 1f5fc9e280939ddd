"""The pass registry: an explicit list of pass classes and aliases, checked once.

Nothing registers itself on import; `graphopt.passes.default_registry()` builds the list. A
built-in pass may be listed as a PassRef (its name and where its class lives): its module is
imported the first time the pass is looked up, so a run imports only the passes it names.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from graphopt.errors import PipelineError
from graphopt.pipeline.base import KEBAB, Pass
from graphopt.pipeline.manager import DEFAULT_MAX_ITERATIONS, PassManager

log = logging.getLogger("graphopt")


@dataclass(frozen=True)
class Alias:
    """A `-p` name for a group of passes, run once in order or to a fixed point."""

    name: str
    summary: str
    members: tuple[str, ...]
    fixed_point: bool = False
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    # (member, option, value): what the alias gives a member unless the user gives that option
    member_options: tuple[tuple[str, str, str], ...] = ()


PLUGIN_GROUP = "graphopt.passes"  # the entry-point group other packages add passes through


@dataclass(frozen=True)
class PassRef:
    """A pass by name and location ("module:Class"), imported when first looked up."""

    name: str
    path: str

    def load(self) -> type[Pass]:
        module, _, attr = self.path.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if getattr(cls, "name", None) != self.name:
            raise ValueError(f"{self.path} is pass {getattr(cls, 'name', None)!r}, listed as {self.name!r}")
        _check_options(cls)
        return cls


def _check_options(p: type[Pass]) -> None:
    if not dataclasses.is_dataclass(p.Options):
        raise ValueError(f"pass {p.name}: Options must be a dataclass")


class PassTable(MutableMapping):
    """name -> Pass class; a PassRef entry is imported on first access (keys and `in` never
    import anything; values() and items() import every pass)."""

    def __init__(self) -> None:
        self._entries: dict[str, "type[Pass] | PassRef"] = {}

    def __getitem__(self, name: str) -> type[Pass]:
        entry = self._entries[name]
        if isinstance(entry, PassRef):
            entry = self._entries[name] = entry.load()
        return entry

    def __setitem__(self, name: str, entry: "type[Pass] | PassRef") -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


class Registry:
    """Passes and aliases by name. With `plugin_group`, the passes other packages declare in that
    entry-point group join the first time a name is not found here (or everything is listed):
    a run that names only built-in passes never scans the installed packages."""

    def __init__(self, passes: "Sequence[type[Pass] | PassRef]", aliases: Sequence[Alias] = (),
                 plugin_group: Optional[str] = None, plugin_adapter=None):
        self.passes = PassTable()
        self.aliases: dict[str, Alias] = {}
        self.plugin_group = plugin_group
        self.plugins_loaded = plugin_group is None
        self.plugin_errors: list[str] = []  # what could not be loaded, said with every unknown name
        # turns what an entry point gives that is not a Pass class (a rule) into Pass classes
        self.plugin_adapter = plugin_adapter
        for p in passes:
            self._add_pass(p)
        for a in aliases:
            self._claim(a.name, "alias")
            self.aliases[a.name] = a
        for a in self.aliases.values():
            for m in a.members:
                if m not in self.passes and m not in self.aliases:
                    raise ValueError(f"alias {a.name} names unknown pass {m}")

    def _add_pass(self, p: "type[Pass] | PassRef") -> None:
        self._claim(getattr(p, "name", ""), "pass")
        if not isinstance(p, PassRef):
            _check_options(p)
        self.passes[p.name] = p

    def load_plugins(self) -> None:
        """Add the passes of every `graphopt.passes` entry point: a Pass subclass, a Rule (subclass or
        instance, which runs as a pass of its own name), or a list of those.
        A plugin that fails to load, or names a pass that exists already, is skipped with a warning."""
        if self.plugins_loaded:
            return
        self.plugins_loaded = True
        from importlib.metadata import entry_points

        for ep in sorted(entry_points(group=self.plugin_group), key=lambda e: e.name):
            try:
                obj = ep.load()
                items = []
                for item in (list(obj) if isinstance(obj, (list, tuple)) else [obj]):
                    if not (isinstance(item, type) and issubclass(item, Pass)) and self.plugin_adapter:
                        item = self.plugin_adapter(item)
                    if not (isinstance(item, type) and issubclass(item, Pass)):
                        raise TypeError(f"{item!r} is neither a graphopt Pass subclass nor a Rule")
                    items.append(item)
                for item in items:
                    self._add_pass(item)
            except Exception as e:  # someone else's package: report it, keep graphopt usable
                text = " ".join(str(e).split())[:200] or type(e).__name__
                msg = f"plugin {ep.name!r} ({ep.value}) was not loaded: {text}"
                self.plugin_errors.append(msg)
                log.warning("%s", msg)

    def _claim(self, name: str, kind: str) -> None:
        if not KEBAB.match(name or ""):
            raise ValueError(f"{kind} name {name!r} is not kebab-case")
        if name in self.passes or name in self.aliases or name == "none":
            raise ValueError(f"duplicate pass or alias name {name!r}")

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted([*self.passes, *self.aliases])

    def suggest(self, name: str, candidates: Optional[Sequence[str]] = None) -> str:
        close = difflib.get_close_matches(name, list(candidates or self.names()), n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""

    def lookup(self, name: str) -> Union[type[Pass], Alias]:
        if name not in self.passes and name not in self.aliases:
            self.load_plugins()
        if name in self.passes:
            return self.passes[name]
        if name in self.aliases:
            return self.aliases[name]
        failed = f" ({'; '.join(self.plugin_errors)})" if self.plugin_errors else ""
        raise PipelineError(f"unknown pass {name!r}{self.suggest(name)}; `graphopt passes` lists them{failed}")

    def option_names(self, alias: Alias) -> set[str]:
        """Every option some member of `alias` (recursively) takes."""
        names: set[str] = set()
        for m in alias.members:
            target = self.lookup(m)
            if isinstance(target, Alias):
                names |= self.option_names(target)
            else:
                names |= {f.name for f in dataclasses.fields(target.Options)}
        return names

    def expand_alias(self, alias: Alias, options: Optional[dict] = None) -> Union[PassManager, list]:
        """The steps an alias stands for: a fixed-point group (a nested PassManager), or the list
        of its members' steps. Options given to an alias go to every member pass that has an
        option of that name; an option no member knows is an error. A fixed-point alias inside
        one that runs in order stays a fixed-point group; inside another fixed-point alias its
        members join the outer group."""
        options = options or {}
        unknown = set(options) - self.option_names(alias)
        if unknown:
            raise PipelineError(f"alias {alias.name!r} has no option {sorted(unknown)[0]!r}")
        steps = []
        for m in alias.members:
            target = self.lookup(m)
            if isinstance(target, Alias):
                mine = {k: v for k, v in options.items() if k in self.option_names(target)}
                sub = self.expand_alias(target, mine)
                if not target.fixed_point:
                    steps.extend(sub)
                else:
                    steps.extend(sub.passes if alias.fixed_point else [sub])
                continue
            fields = {f.name for f in dataclasses.fields(target.Options)}
            given = {k: v for k, v in options.items() if k in fields}
            fixed = {k: v for member, k, v in alias.member_options if member == m}
            steps.append(target(make_options(target, {**fixed, **given}, given=set(given))))
        if alias.fixed_point:
            return PassManager(steps, name=alias.name, fixed_point=True, max_iterations=alias.max_iterations)
        return steps


def make_options(pass_cls: type[Pass], raw: dict, given: Optional[set] = None) -> object:
    """Build a pass's Options dataclass from raw (string or number) values, checking types. An
    Options class with a `check_given(names)` method is then told which options the user gave
    (`given`, default: every key of `raw`), so it can refuse one that does not apply."""
    fields = {f.name: f for f in dataclasses.fields(pass_cls.Options)}
    kwargs = {}
    for key, value in raw.items():
        f = fields.get(key)
        if f is None:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else (
                f"; it has {', '.join(sorted(fields))}" if fields else "; it takes no options")
            raise PipelineError(f"pass {pass_cls.name!r} has no option {key!r}{hint}")
        kwargs[key] = _convert(pass_cls.name, key, f.type, value)
    options = pass_cls.Options(**kwargs)
    check = getattr(options, "check_given", None)
    if callable(check):
        check(set(raw) if given is None else set(given))
    return options


def _convert(pname: str, key: str, typ, value):
    tname = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    text = str(value)
    try:
        if tname == "bool":
            if isinstance(value, bool):
                return value
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tname == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(text, 0)
        if tname == "float":
            return float(value)
        return text
    except ValueError:
        raise PipelineError(f"option {key!r} of pass {pname!r} expects {tname}, got {text!r}") from None
