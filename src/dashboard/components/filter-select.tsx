/**
 * A filter as a select: "any" first, then the options; a value from a shared link that the options
 * do not hold stays selectable. Its label is its accessible name.
 */
type Option = string | { value: string; label: string };

export function FilterSelect({
  label,
  value,
  options,
  onChange,
}: {
  label: string;
  value: string | undefined;
  options: Option[];
  onChange: (value: string) => void;
}) {
  const id = `filter-${label.toLowerCase().replace(/\W+/g, '-')}`;
  const entries = options.map((option) => (typeof option === 'string' ? { value: option, label: option } : option));
  // A value from a shared link that the lists do not hold (a rare tag, a version no device runs) stays selectable.
  if (value && !entries.some((entry) => entry.value === value)) entries.unshift({ value, label: value });
  return (
    <div>
      <label for={id}>{label}</label>
      <select id={id} value={value ?? ''} onChange={(event) => onChange((event.target as HTMLSelectElement).value)}>
        <option value="">any</option>
        {entries.map((entry) => (
          <option key={entry.value} value={entry.value}>
            {entry.label}
          </option>
        ))}
      </select>
    </div>
  );
}
