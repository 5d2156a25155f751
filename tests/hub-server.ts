// A Hugging Face Hub on loopback for the tests: it answers the calls @huggingface/hub and Python's
// huggingface_hub make to fetch files, as the Hub does. Repository info at a revision
// (/api/<kind>s/<id>/revision/<rev>: the commit sha), the recursive file tree (sizes, git blob
// sha1s, LFS sha256s), and /resolve/<rev>/<path> with X-Repo-Commit and ETag headers: regular
// files directly, LFS files through a 302 to a content address on another origin (a second
// port, /cdn/<sha256>, as the Hub sends them to its CDN) that honours Range. Faults on demand: a gated repository (401 without the token), 404s, a 503 before the
// first success, a connection cut after some bytes, corrupt bytes.
import { createHash } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubRepo {
  kind: 'model' | 'dataset';
  id: string;
  /** path -> bytes of the one commit the repository has. */
  files: Map<string, Buffer>;
  /** Refuse requests without `Authorization: Bearer <token>` (401), or with another token (403). */
  token?: string;
}

export interface Faults {
  /** Paths whose first body request answers 503. */
  unavailableOnce?: Set<string>;
  /** path -> bytes sent before the connection is cut, on the first body request answered. */
  cutAfter?: Map<string, number>;
  /** Paths served with every byte flipped (their hash no longer matches). */
  corrupt?: Set<string>;
  /** Milliseconds before every body is sent (so that processes starting together overlap). */
  delayMs?: number;
}

/** Files at least this big are served as LFS files, as the Hub does with large ones. */
const LFS_FROM = 1024;

const gitSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export class LoopbackHub {
  private server: Server;
  /** The content-addressed store LFS files redirect to: another origin, as the Hub's CDN is. */
  private cdn: Server;
  private cdnOrigin = '';
  readonly commits = new Map<string, string>(); // `${kind}s/${id}` -> commit
  /** Every request seen: method, path and Range header. */
  readonly requests: { method: string; path: string; range?: string }[] = [];
  private readonly repos = new Map<string, HubRepo>();
  private readonly byHash = new Map<string, Buffer>();
  private readonly refused = new Set<string>();
  private readonly answered = new Set<string>();
  private readonly bodies = new Map<string, number>();

  constructor(
    repos: HubRepo[],
    readonly faults: Faults = {},
  ) {
    for (const repo of repos) {
      const key = `${repo.kind}s/${repo.id}`;
      this.repos.set(key, repo);
      const commit = createHash('sha1').update(key).update(String(repo.files.size)).digest('hex');
      this.commits.set(key, commit);
      for (const bytes of repo.files.values()) this.byHash.set(sha256(bytes), bytes);
    }
    this.server = createServer((req, res) => this.handle(req, res));
    this.cdn = createServer((req, res) => this.handle(req, res));
  }

  async start(): Promise<string> {
    const listen = (s: Server) =>
      new Promise<string>((done) =>
        s.listen(0, '127.0.0.1', () => done(`http://127.0.0.1:${(s.address() as AddressInfo).port}`)),
      );
    this.cdnOrigin = await listen(this.cdn);
    return listen(this.server);
  }

  async stop(): Promise<void> {
    for (const s of [this.server, this.cdn]) {
      s.closeAllConnections();
      await new Promise((done) => s.close(done));
    }
  }

  /** Body requests (not probes of one byte) for a file's content, through /resolve or the CDN. */
  downloads(path: string): number {
    return this.bodies.get(path) ?? 0;
  }

  commitOf(kind: 'model' | 'dataset', id: string): string {
    return this.commits.get(`${kind}s/${id}`)!;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url!, 'http://hub');
    const path = decodeURIComponent(url.pathname);
    this.requests.push({ method: req.method!, path, range: req.headers.range });
    const api = /^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)(?:\/(.*))?$/.exec(path);
    if (api) return this.api(req, res, `${api[1]}/${api[2]}`, api[3]!, api[4]!);
    const resolve = /^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (resolve)
      return this.resolve(req, res, `${resolve[1] ? 'datasets' : 'models'}/${resolve[2]}`, resolve[3]!, resolve[4]!);
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(path);
    if (cdn && this.byHash.has(cdn[1]!)) return this.body(req, res, this.byHash.get(cdn[1]!)!, cdn[1]!, path);
    this.error(res, 404, 'EntryNotFound', `${path} not found`);
  }

  /** The repository `key` names, or undefined after answering 404/401/403. */
  private repoFor(req: IncomingMessage, res: ServerResponse, key: string, revision: string): HubRepo | undefined {
    const repo = this.repos.get(key);
    if (!repo) return void this.error(res, 404, 'RepoNotFound', 'Repository not found');
    if (repo.token) {
      const auth = req.headers.authorization;
      if (!auth) return void this.error(res, 401, 'GatedRepo', 'Access to this repository is restricted: log in');
      if (auth !== `Bearer ${repo.token}`) return void this.error(res, 403, 'GatedRepo', 'This token has no access');
    }
    if (revision !== 'main' && revision !== 'HEAD' && revision !== this.commits.get(key))
      return void this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
    return repo;
  }

  private api(req: IncomingMessage, res: ServerResponse, key: string, what: string, revision: string): void {
    const repo = this.repoFor(req, res, key, revision);
    if (!repo) return;
    const sha = this.commits.get(key)!;
    if (what === 'revision') {
      const siblings = [...repo.files.keys()].map((rfilename) => ({ rfilename }));
      return this.json(res, { _id: sha.slice(0, 24), id: repo.id, sha, private: !!repo.token, gated: false, siblings });
    }
    const folders = new Set<string>();
    const entries: unknown[] = [];
    for (const [path, bytes] of [...repo.files].sort(([a], [b]) => a.localeCompare(b))) {
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i++) folders.add(parts.slice(0, i).join('/'));
      const lfs = bytes.length >= LFS_FROM ? { oid: sha256(bytes), size: bytes.length, pointerSize: 134 } : undefined;
      entries.push({ type: 'file', oid: gitSha1(bytes), size: bytes.length, path, ...(lfs && { lfs }) });
    }
    for (const path of folders) entries.push({ type: 'directory', oid: gitSha1(Buffer.from(path)), size: 0, path });
    this.json(res, entries);
  }

  private resolve(req: IncomingMessage, res: ServerResponse, key: string, revision: string, path: string): void {
    const repo = this.repoFor(req, res, key, revision);
    if (!repo) return;
    const bytes = repo.files.get(path);
    if (!bytes) return this.error(res, 404, 'EntryNotFound', `${path} does not exist at ${revision}`);
    res.setHeader('X-Repo-Commit', this.commits.get(key)!);
    if (bytes.length >= LFS_FROM) {
      const hash = sha256(bytes);
      res.writeHead(302, {
        Location: `${this.cdnOrigin}/cdn/${hash}`,
        'X-Linked-Etag': `"${hash}"`,
        'X-Linked-Size': String(bytes.length),
        ETag: `"${gitSha1(Buffer.from(hash))}"`,
      });
      return void res.end();
    }
    this.body(req, res, bytes, gitSha1(bytes), path);
  }

  /** A file's bytes, whole or the Range asked for, with the faults set for it. */
  private body(req: IncomingMessage, res: ServerResponse, bytes: Buffer, etag: string, path: string): void {
    const name =
      [...this.repos.values()].flatMap((r) => [...r.files].filter(([, b]) => b === bytes).map(([p]) => p))[0] ?? path;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const probe = req.headers.range === 'bytes=0-0';
    if (!probe && req.method === 'GET') this.bodies.set(name, (this.bodies.get(name) ?? 0) + 1);
    const body = !probe && req.method === 'GET';
    if (body && this.faults.unavailableOnce?.has(name) && !this.refused.has(name)) {
      this.refused.add(name);
      return this.error(res, 503, 'Unavailable', 'try again later');
    }
    const first = body && !this.answered.has(name);
    if (first) this.answered.add(name);
    const start = range ? Number(range[1]) : 0;
    const end = range && range[2] ? Math.min(Number(range[2]), bytes.length - 1) : bytes.length - 1;
    let out = bytes.subarray(start, end + 1);
    if (this.faults.corrupt?.has(name)) out = Buffer.from(out.map((b) => b ^ 0xff));
    const headers = { ETag: `"${etag}"`, 'Accept-Ranges': 'bytes', 'Content-Length': String(out.length) };
    if (range) res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${bytes.length}` });
    else res.writeHead(200, headers);
    if (req.method === 'HEAD') return void res.end();
    if (this.faults.delayMs && !probe)
      return void setTimeout(() => this.send(res, out, first ? name : undefined), this.faults.delayMs);
    this.send(res, out, first ? name : undefined);
  }

  /** The body, cut short when the first request for `first` should be. */
  private send(res: ServerResponse, out: Buffer, first: string | undefined): void {
    const cut = first ? this.faults.cutAfter?.get(first) : undefined;
    if (cut !== undefined) {
      res.write(out.subarray(0, cut), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.end(out);
  }

  private json(res: ServerResponse, value: unknown): void {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(value));
  }

  private error(res: ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, { 'Content-Type': 'application/json', 'X-Error-Code': code });
    res.end(JSON.stringify({ error: message }));
  }
}
