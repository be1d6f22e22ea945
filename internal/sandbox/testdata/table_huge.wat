;; table_huge declares a table of 2^20 + 1 entries, one over MaxTableEntries.
(module
  (table 1048577 funcref)
  (func (export "_start")))
