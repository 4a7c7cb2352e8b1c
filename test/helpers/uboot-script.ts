/**
 * A small interpreter of U-Boot's hush shell, for the boot script the package ships
 * (packaging/boot/boot.cmd): no U-Boot can run here (no board, and no U-Boot build for the
 * host in Debian), so the tests run the same script text, with the same variables, against the
 * real environment (libubootenv's fw_printenv/fw_setenv, redundant copies) — which is what a
 * board's U-Boot reads and `saveenv` writes.
 *
 * What it understands is what the script uses: comments, `;` and new lines, `&&` and `||`,
 * `if … then … elif … else … fi`, single quotes (literal) and double quotes (with `${var}`
 * expansion), and the commands `test` (-n -z = != -eq -ne -gt -lt -ge -le), `setenv`, `saveenv`,
 * `echo`, `run`, `part uuid`, `load`, `booti`/`bootz`/`bootm` (the boot ends the run). Anything
 * else throws, so the script cannot silently grow past what is tested.
 */
import type { BootEnvironmentStore } from '../../src/agent/boot-environment.ts';

type Part = { text: string; quote: 'none' | 'single' | 'double' };
type Word = Part[];
type Token = { kind: 'word'; word: Word } | { kind: 'sep' } | { kind: 'op'; op: '&&' | '||' };
type Node =
  | { kind: 'simple'; words: Word[] }
  | { kind: 'chain'; first: Node; rest: { op: '&&' | '||'; node: Node }[] }
  | { kind: 'if'; branches: { condition: Node[]; body: Node[] }[]; otherwise: Node[] };

function lex(source: string): Token[] {
  const tokens: Token[] = [];
  let word: Word | undefined;
  const part = (quote: Part['quote']): Part => {
    word ??= [];
    const last = word.at(-1);
    if (last && last.quote === quote) return last;
    const fresh = { text: '', quote };
    word.push(fresh);
    return fresh;
  };
  const endWord = () => {
    if (word) tokens.push({ kind: 'word', word });
    word = undefined;
  };
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === '#' && word === undefined) {
      while (i < source.length && source[i] !== '\n') i++;
      endWord();
      tokens.push({ kind: 'sep' });
    } else if (c === ' ' || c === '\t') {
      endWord();
    } else if (c === '\n' || c === ';') {
      endWord();
      tokens.push({ kind: 'sep' });
    } else if ((c === '&' || c === '|') && source[i + 1] === c) {
      endWord();
      tokens.push({ kind: 'op', op: c === '&' ? '&&' : '||' });
      i++;
    } else if (c === "'") {
      const end = source.indexOf("'", i + 1);
      if (end < 0) throw new Error('unterminated single quote');
      part('single').text += source.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      const end = source.indexOf('"', i + 1);
      if (end < 0) throw new Error('unterminated double quote');
      part('double').text += source.slice(i + 1, end);
      i = end;
    } else if (c === '\\') {
      part('single').text += source[++i] ?? '';
    } else {
      part('none').text += c;
    }
  }
  endWord();
  return tokens;
}

const keywords = new Set(['if', 'then', 'elif', 'else', 'fi']);
const keywordOf = (token: Token | undefined): string | undefined =>
  token?.kind === 'word' &&
  token.word.length === 1 &&
  token.word[0]!.quote === 'none' &&
  keywords.has(token.word[0]!.text)
    ? token.word[0]!.text
    : undefined;

class Parser {
  private position = 0;
  constructor(private readonly tokens: Token[]) {}

  program(): Node[] {
    const nodes = this.list(new Set());
    if (this.position < this.tokens.length) throw new Error(`unexpected ${keywordOf(this.tokens[this.position])}`);
    return nodes;
  }

  /** Commands until one of `stops` (a keyword) starts a command. */
  private list(stops: Set<string>): Node[] {
    const nodes: Node[] = [];
    for (;;) {
      while (this.tokens[this.position]?.kind === 'sep') this.position++;
      const token = this.tokens[this.position];
      if (!token) return nodes;
      const keyword = keywordOf(token);
      if (keyword && stops.has(keyword)) return nodes;
      nodes.push(this.chain());
    }
  }

  private chain(): Node {
    const first = this.command();
    const rest: { op: '&&' | '||'; node: Node }[] = [];
    for (let token = this.tokens[this.position]; token?.kind === 'op'; token = this.tokens[this.position]) {
      this.position++;
      rest.push({ op: token.op, node: this.command() });
    }
    return rest.length ? { kind: 'chain', first, rest } : first;
  }

  private command(): Node {
    if (keywordOf(this.tokens[this.position]) === 'if') return this.ifClause();
    const words: Word[] = [];
    for (let token = this.tokens[this.position]; token?.kind === 'word'; token = this.tokens[this.position]) {
      words.push(token.word);
      this.position++;
    }
    if (words.length === 0) throw new Error('empty command');
    return { kind: 'simple', words };
  }

  private ifClause(): Node {
    const branches: { condition: Node[]; body: Node[] }[] = [];
    let otherwise: Node[] = [];
    let keyword = this.take(); // if
    while (keyword === 'if' || keyword === 'elif') {
      const condition = this.list(new Set(['then']));
      this.expect('then');
      const body = this.list(new Set(['elif', 'else', 'fi']));
      branches.push({ condition, body });
      keyword = this.take();
    }
    if (keyword === 'else') {
      otherwise = this.list(new Set(['fi']));
      keyword = this.take();
    }
    if (keyword !== 'fi') throw new Error(`expected fi, got ${keyword}`);
    return { kind: 'if', branches, otherwise };
  }

  private take(): string | undefined {
    return keywordOf(this.tokens[this.position++]);
  }

  private expect(keyword: string): void {
    const got = this.take();
    if (got !== keyword) throw new Error(`expected ${keyword}, got ${got}`);
  }
}

export interface UBootBoard {
  /** `part uuid <dev> <n>:<part>` answers: "mmc 0:2" → PARTUUID. */
  partUuids: Record<string, string>;
  /** Variables U-Boot itself provides (kernel_addr_r, fdt_addr …), not stored in the environment. */
  builtins?: Record<string, string>;
}

export interface UBootRun {
  /** What was echoed, line by line. */
  output: string[];
  /** `load` commands run: "mmc 0:3 /boot/Image". */
  loads: string[];
  /** The kernel command line at the boot command, or undefined when the script never booted. */
  bootargs: string | undefined;
  saves: number;
}

class Booted extends Error {}

/** Runs `script` as U-Boot would at power-on, against `environment`; `saveenv` writes it back. */
export async function runUBootScript(
  script: string,
  environment: BootEnvironmentStore,
  board: UBootBoard,
): Promise<UBootRun> {
  const stored = await environment.read();
  const variables = new Map<string, string>([...Object.entries(board.builtins ?? {}), ...stored]);
  const run: UBootRun = { output: [], loads: [], bootargs: undefined, saves: 0 };

  const expand = (word: Word): string =>
    word
      .map((part) =>
        part.quote === 'single'
          ? part.text
          : part.text.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, braced, bare) => variables.get(braced ?? bare) ?? ''),
      )
      .join('');

  const test = (args: string[]): boolean => {
    if (args.length === 2 && args[0] === '-n') return args[1] !== '';
    if (args.length === 2 && args[0] === '-z') return args[1] === '';
    if (args.length !== 3) throw new Error(`test ${args.join(' ')}: unsupported`);
    const [a, op, b] = args as [string, string, string];
    // U-Boot's test reads numbers with simple_strtol(…, 10): what does not parse is 0.
    const number = (text: string) => Number.parseInt(text, 10) || 0;
    switch (op) {
      case '=':
        return a === b;
      case '!=':
        return a !== b;
      case '-eq':
        return number(a) === number(b);
      case '-ne':
        return number(a) !== number(b);
      case '-gt':
        return number(a) > number(b);
      case '-lt':
        return number(a) < number(b);
      case '-ge':
        return number(a) >= number(b);
      case '-le':
        return number(a) <= number(b);
      default:
        throw new Error(`test: unsupported operator ${op}`);
    }
  };

  const save = async () => {
    const changes: Record<string, string> = {};
    for (const [name, value] of variables) if (stored.get(name) !== value) changes[name] = value;
    for (const name of stored.keys()) if (!variables.has(name)) changes[name] = '';
    await environment.update(changes);
    for (const [name, value] of Object.entries(changes)) {
      if (value === '') stored.delete(name);
      else stored.set(name, value);
    }
    run.saves += 1;
  };

  const simple = async (words: Word[]): Promise<boolean> => {
    const [command, ...args] = words.map(expand);
    switch (command) {
      case 'test':
        return test(args);
      case 'true':
        return true;
      case 'false':
        return false;
      case 'setenv':
        if (args.length === 0) throw new Error('setenv needs a name');
        if (args.length === 1) variables.delete(args[0]!);
        else variables.set(args[0]!, args.slice(1).join(' '));
        return true;
      case 'saveenv':
        await save();
        return true;
      case 'echo':
        run.output.push(args.join(' '));
        return true;
      case 'run':
        for (const name of args) await list(new Parser(lex(variables.get(name) ?? '')).program());
        return true;
      case 'part': {
        const [sub, device, partition, name] = args;
        if (sub !== 'uuid' || !name) throw new Error(`part ${args.join(' ')}: unsupported`);
        const uuid = board.partUuids[`${device} ${partition}`];
        if (uuid === undefined) return false;
        variables.set(name, uuid);
        return true;
      }
      case 'load':
        run.loads.push(`${args[0]} ${args[1]} ${args[3]}`);
        return true;
      case 'booti':
      case 'bootz':
      case 'bootm':
        run.bootargs = variables.get('bootargs') ?? '';
        throw new Booted();
      default:
        throw new Error(`U-Boot command not understood by the test interpreter: ${command}`);
    }
  };

  const node = async (current: Node): Promise<boolean> => {
    if (current.kind === 'simple') return simple(current.words);
    if (current.kind === 'chain') {
      let status = await node(current.first);
      for (const { op, node: next } of current.rest) {
        if ((op === '&&' && status) || (op === '||' && !status)) status = await node(next);
      }
      return status;
    }
    for (const branch of current.branches) {
      if (await list(branch.condition)) return list(branch.body);
    }
    return list(current.otherwise);
  };

  const list = async (nodes: Node[]): Promise<boolean> => {
    let status = true;
    for (const current of nodes) status = await node(current);
    return status;
  };

  try {
    await list(new Parser(lex(script)).program());
  } catch (error) {
    if (!(error instanceof Booted)) throw error;
  }
  return run;
}
