// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title NoxTestDollar
/// @notice A dollar-like ERC-20 with six decimals, the token local networks pay
///         private calls' fees in (the oracles price it like USDC). Production
///         exits list real tokens instead.
contract NoxTestDollar is ERC20, Ownable {
    /// @param initialSupply Minted to the deployer, in base units (six decimals).
    constructor(uint256 initialSupply) ERC20("NOX Test Dollar", "tUSD") Ownable(msg.sender) {
        _mint(msg.sender, initialSupply);
    }

    /// @notice Six decimals, like USDC.
    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mints `amount` to `to`. Owner only.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
