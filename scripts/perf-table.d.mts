// Types of scripts/perf-table.mjs for the tests that call it.
/** The Markdown tables for one bench output file (`source` names it in the text). */
export function renderTable(text: string, source: string): string;
/** README with its generated section replaced by `table`. */
export function withTable(readme: string, table: string): string;
